"""Shared pieces of the actor tests: fast timing, a driver loop, exact checks."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pykka

from actors import (
    AccountDiff,
    Completed,
    ConnectionChanged,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Slot,
    Transaction,
)
from actors.runtime.connection import (
    DEFAULT_MAX_FRAME_SIZE,
    Connection,
    Disconnected,
    Opened,
    Received,
)
from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator, ServerLiveness
from protocol.simulator.chain import Expected
from protocol.simulator.proxy import FaultProxy

FAST = Timing(connect=2.0, handshake=2.0, keepalive_interval=0.05, keepalive_deadline=0.25,
              graceful_close=1.0)
QUICK_RETRY = ReconnectPolicy(initial=0.01, multiplier=2.0, max_delay=0.1, jitter=0.2,
                              max_attempts=20, max_total=20.0, uptime_reset=5.0,
                              rng=random.Random(0))
# Faults through the TCP proxy: the server finds a dead peer in 0.5 s (its own
# keepalive; a re-attach meets sessionOwnershipBusy until then), and the client's
# retry budget outlives that.
FAULT_SERVER = ServerLiveness(keepalive_interval=0.1, keepalive_deadline=0.4)
FAULT_POLICY = ReconnectPolicy(initial=0.01, multiplier=2.0, max_delay=0.1, jitter=0.2,
                               max_attempts=60, max_total=20.0, uptime_reset=5.0,
                               rng=random.Random(0))


@contextmanager
def proxied(seed: int, slots: int) -> Iterator[tuple[LocalSimulator, FaultProxy]]:
    """A simulator with FAULT_SERVER liveness and a fault proxy in front of it."""
    with LocalSimulator(seed=seed, slots=slots, liveness=FAULT_SERVER) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        yield sim, proxy


class Recorder(pykka.ThreadingActor):
    """Stands in for an actor something tells: records every message; ask "get"."""

    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return list(self.seen)
        self.seen.append(message)
        return None


def start_connection(url: str, owner: pykka.ActorRef[Any], *, window: int = 8,
                     connect_timeout: float = 2.0, headers: dict[str, str] | None = None,
                     max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Connection:
    """A real ``Connection`` (text frames decoded to ``str``) telling ``owner`` (a
    ``Recorder``), started: its connect is under way."""
    conn = Connection(url, owner=owner, decode=bytes.decode, window=window,
                      connect_timeout=connect_timeout, headers=headers,
                      max_frame_size=max_frame_size)
    conn.start()
    return conn


def open_connection(url: str, owner: pykka.ActorRef[Any], *, window: int,
                    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Connection:
    """:func:`start_connection`, returning once the connection is open."""
    conn = start_connection(url, owner, window=window, max_frame_size=max_frame_size)
    wait_for(lambda: Opened() in owner.ask("get"), 5, "the connection to open")
    return conn


def received_items(seen: list[Any]) -> list[Any]:
    """Every item of every ``Received`` batch a connection told, in order."""
    return [item for m in seen if isinstance(m, Received) for item in m.items]


def disconnects(seen: list[Any]) -> list[Disconnected]:
    return [m for m in seen if isinstance(m, Disconnected)]


def until_disconnected(owner: pykka.ActorRef[Any], timeout: float = 5.0) -> list[Any]:
    """Wait until the connection told ``owner`` it ended; everything it told."""
    wait_for(lambda: disconnects(owner.ask("get")), timeout, "the connection to end")
    seen: list[Any] = owner.ask("get")
    return seen


def start(sim: LocalSimulator, start_slot: int, end_slot: int, **kwargs: Any
          ) -> ManagedBacktestSession:
    kwargs.setdefault("timing", FAST)
    kwargs.setdefault("policy", QUICK_RETRY)
    return ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                        CreateSession(start_slot, end_slot), **kwargs)


def drive(session: ManagedBacktestSession, *, advance: int = 1, timeout: float = 10.0,
          on_event: Callable[[ManagedEvent], None] | None = None) -> list[ManagedEvent]:
    """Answer every ReadyForContinue with a continue until Completed; all events."""
    events: list[ManagedEvent] = []
    while True:
        event = session.next_event(timeout=timeout)
        events.append(event)
        if on_event is not None:
            on_event(event)
        if isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=advance), timeout=timeout)
        elif isinstance(event, Completed):
            return events


def check_exact(events: list[ManagedEvent], expected: Expected) -> None:
    """0 missing, 0 duplicated, slot order per subscription, items before Completed."""
    slots = [e.slot for e in events if isinstance(e, Slot)]
    assert slots == expected.slots
    txs = [e for e in events if isinstance(e, Transaction)]
    diffs = [e for e in events if isinstance(e, AccountDiff)]
    signatures = [t.signature for t in txs]
    diff_keys = [d.key for d in diffs]
    assert len(signatures) == len(set(signatures)), "duplicated transactions"
    assert len(diff_keys) == len(set(diff_keys)), "duplicated diffs"
    assert sorted(signatures) == sorted(expected.signatures), "missing or extra transactions"
    assert sorted(diff_keys) == sorted(expected.diff_keys), "missing or extra diffs"
    completed_at = next(i for i, e in enumerate(events) if isinstance(e, Completed))
    items_at = [i for i, e in enumerate(events) if isinstance(e, Transaction | AccountDiff)]
    assert not items_at or max(items_at) < completed_at, "an item came after Completed"
    # Slot order per stream, across addresses and across reconnects.
    assert [t.slot for t in txs] == sorted(t.slot for t in txs), "transactions out of order"
    assert [d.slot for d in diffs] == sorted(d.slot for d in diffs), "diffs out of order"


def connection_changes(events: list[ManagedEvent], name: str) -> list[str]:
    return [type(e.status).__name__ for e in events
            if isinstance(e, ConnectionChanged) and e.name == name]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy; a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@contextmanager
def no_leaks(grace: float) -> Iterator[None]:
    """Threads and pykka actors after the block == before, within ``grace`` seconds."""
    threads_before = threading.active_count()
    actors_before = len(pykka.ActorRegistry.get_all())
    yield
    wait_for(lambda: threading.active_count() == threads_before
             and len(pykka.ActorRegistry.get_all()) == actors_before, grace,
             f"threads back to {threads_before} (now {threading.active_count()}: "
             f"{[t.name for t in threading.enumerate()]}) and actors to {actors_before}")


def bounded(call: Callable[[], Any], seconds: float) -> BaseException | None:
    """Run ``call`` on a helper thread: its exception, or None; fail if it outlives the bound.

    A call that hangs (as ``start(timing="x")`` did) fails the test instead of the run.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True, name="bounded-call")
    thread.start()
    thread.join(seconds)
    assert outcome, f"call did not return within {seconds}s"
    return outcome[0]


def to_ready(control: Any, advance: int = 0) -> int:
    """Read a control handle until ReadyForContinue (sending ``advance`` first if > 0); the
    last Slot seen. A fresh session starts with a Ready: read it (advance=0) first."""
    if advance:
        control.send_continue(ContinueParams(advance_count=advance), timeout=5)
    last = -1
    while not isinstance(event := control.next_event(timeout=5), ReadyForContinue):
        if isinstance(event, Slot):
            last = event.slot
    return last
