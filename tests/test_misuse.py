"""Unusual but legal calls: each works, or raises a typed error naming the cause, in a bound.

Regression tests for issue 11, items 1 (an interrupted ``next_event`` lost
events), 5 (a trickled upgrade reply held ``start()``), 12 (``select()`` failed
above fd 1024) and 13 (bad arguments got past the up-front checks).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import attrs
import pykka
import pytest

from actors import (
    AccountDiff,
    Completed,
    ConnectionChanged,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    SessionInfo,
    Slot,
    Transaction,
)
from actors.cli import main as cli_main
from actors.runtime.timers import Scheduler
from actors.supervision.supervisor import CancelTake, Shutdown, TakeEvents
from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import FAST, QUICK_RETRY, check_exact, drive, no_leaks, start, wait_for

pytestmark = pytest.mark.backtest_simulator(seed=23, slots=300)


def _bounded(call: Callable[[], Any], seconds: float) -> BaseException | None:
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


# --- item 1: an interrupted next_event() loses nothing ----------------------------------


class Interrupted(Exception):
    """What the test's signal handler raises: stands for Ctrl-C or any handler's error."""


class RunTooLong(Exception):
    pass


def _streams(events: list[ManagedEvent]) -> dict[str, list[ManagedEvent]]:
    """Each stream's events in order, ConnectionChanged left out.

    Within a stream the order is the chain's; how the three streams interleave
    depends on thread timing, and differs between two clean runs too.
    """
    streams: dict[str, list[ManagedEvent]] = {"control": [], "transactions": [],
                                              "account_diffs": []}
    for event in events:
        if isinstance(event, Transaction):
            streams["transactions"].append(event)
        elif isinstance(event, AccountDiff):
            streams["account_diffs"].append(event)
        elif not isinstance(event, ConnectionChanged):
            streams["control"].append(event)
    return streams


def _run(session: ManagedBacktestSession, tx: list[str], diffs: list[str],
         on_wait: Callable[[], None] | None = None) -> list[ManagedEvent]:
    """Subscribe both streams and drive to Completed with ``next_event(timeout=None)``."""
    session.subscribe_transactions(tx)
    session.subscribe_account_diffs(diffs)
    events: list[ManagedEvent] = []
    while True:
        if on_wait is not None:
            on_wait()
        try:
            event = session.next_event(timeout=None)
        except Interrupted:
            continue
        events.append(event)
        if isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=1), timeout=10)
        elif isinstance(event, Completed):
            return events


_NEXT_EVENT = ManagedBacktestSession.next_event.__code__
_FUTURE_GET = pykka.ThreadingFuture.get.__code__
_CONDITION_WAIT = threading.Condition.wait.__code__


def _awaited_future(frame: FrameType | None) -> pykka.ThreadingFuture[Any] | None:
    """The future a ``next_event`` call is blocked on, if the main thread is in one."""
    future = None
    while frame is not None:
        if frame.f_code is _FUTURE_GET and future is None:
            future = frame.f_locals.get("self")
        if frame.f_code is _NEXT_EVENT:
            return future
        frame = frame.f_back
    return None


def _is_set(future: pykka.ThreadingFuture[Any]) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:  # noqa: BLE001 - completed with an error: set all the same
        return True
    return True


@pytest.mark.timeout(90, method="thread")  # the test owns SIGALRM (pytest-timeout's default)
@pytest.mark.parametrize("when", ["waiting", "already_set"])
def test_interrupted_next_event_loses_no_event(sim: LocalSimulator, when: str) -> None:
    """Item 1: a signal handler raising inside ``next_event`` 10+ times changes no event.

    ``waiting``: the interrupt lands while the call waits for its batch.
    ``already_set``: the handler first lets the supervisor fill the batch, then raises:
    the interrupt lands when the future is already set.
    """
    first, _ = sim.available_range()
    end = first + 250
    tx, diffs = list(sim.addresses[:3]), list(sim.addresses[2:5])
    clean_session = start(sim, first, end)
    try:
        clean = _run(clean_session, tx, diffs)
    finally:
        clean_session.shutdown()

    rng = random.Random(7)
    state = {"armed": False, "interrupts": 0, "in_handler": False}
    deadline = time.monotonic() + 30

    def handler(_signum: int, frame: FrameType | None) -> None:
        if state["in_handler"]:
            return  # never nest: the outer call may hold the future's lock
        state["in_handler"] = True
        try:
            if time.monotonic() > deadline:
                raise RunTooLong("the interrupted run did not complete within 30s")
            if not state["armed"]:
                return
            future = _awaited_future(frame)
            if future is None:
                return  # not blocked in next_event: an interrupt there is not this test's
            if when == "already_set":
                # Only while Condition.wait has released the future's lock: then the
                # supervisor can complete the future while this handler runs.
                if frame is None or frame.f_code is not _CONDITION_WAIT:
                    return
                settle = time.monotonic() + 0.5
                while not _is_set(future) and time.monotonic() < settle:
                    time.sleep(0.0005)
                if not _is_set(future):
                    return
            state["armed"] = False
            state["interrupts"] += 1
            raise Interrupted
        finally:
            state["in_handler"] = False

    def arm() -> None:
        state["armed"] = True
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0002, 0.002), 0.001)

    previous = signal.signal(signal.SIGALRM, handler)
    session = start(sim, first, end)
    try:
        interrupted = _run(session, tx, diffs, on_wait=arm)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        session.shutdown()
    assert state["interrupts"] >= 10
    clean_streams, interrupted_streams = _streams(clean), _streams(interrupted)
    assert all(clean_streams.values())
    for name, expected_events in clean_streams.items():
        assert interrupted_streams[name] == expected_events, name
    check_exact(interrupted, sim.expected(first, end, transactions=tx, account_diffs=diffs))


class _Push:
    def __init__(self, events: list[ManagedEvent]) -> None:
        self.events = events


class _FakeSupervisor(pykka.ThreadingActor):
    """Answers ``TakeEvents``/``CancelTake``/``Shutdown`` as the supervisor does.

    Lets a test decide exactly when a take is filled and when the facade is
    interrupted, which real traffic cannot. ``on_cancel`` runs on each
    ``CancelTake`` before it is answered.
    """

    use_daemon_thread = True

    def __init__(self, on_cancel: Callable[[int], None] = lambda n: None) -> None:
        super().__init__()
        self.queued: list[ManagedEvent] = []
        self.takers: list[TakeEvents] = []
        self.cancels = 0
        self._on_cancel = on_cancel

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TakeEvents):
            self.takers.append(message)
        elif isinstance(message, _Push):
            self.queued.extend(message.events)
        elif isinstance(message, CancelTake):
            self.cancels += 1
            self._on_cancel(self.cancels)
            for taker in self.takers:
                if taker.reply is message.reply:
                    self.takers.remove(taker)
                    return True
            return False
        elif isinstance(message, Shutdown):
            message.reply.set([])
        elif message == "state":
            return len(self.takers), self.cancels
        while self.takers and self.queued:
            taker = self.takers.pop(0)
            taker.reply.set(self.queued[:taker.limit])
            del self.queued[:taker.limit]
        return None


class First(Exception):
    pass


class Second(Exception):
    pass


def _main_thread_waits() -> bool:
    """The main thread is blocked in Condition.wait (its future's lock is free)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return frame is not None and frame.f_code is _CONDITION_WAIT


@contextmanager
def _fake_session(on_cancel: Callable[[int], None] = lambda n: None
                  ) -> Iterator[tuple[ManagedBacktestSession, pykka.ActorRef[Any]]]:
    fake = _FakeSupervisor.start(on_cancel)
    session = ManagedBacktestSession(fake, Scheduler(), SessionInfo("s", "http://h/x"), FAST)
    try:
        yield session, fake
    finally:
        session.shutdown()


@pytest.mark.timeout(30, method="thread")
def test_interrupt_while_waiting_withdraws_the_take() -> None:
    """Item 1: nothing was in the take: it is withdrawn, and the next take gets the events."""
    helper_done = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise First

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with _fake_session() as (session, fake):
            def interrupt() -> None:
                wait_for(lambda: fake.ask("state")[0] == 1 and _main_thread_waits(), 5,
                         "the facade waiting on its take")
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                helper_done.set()

            threading.Thread(target=interrupt, daemon=True).start()
            with pytest.raises(First):
                session.next_event(timeout=None)
            assert helper_done.wait(5)
            assert fake.ask("state") == (0, 1)  # withdrawn: no take left to swallow events
            events = [Slot(1), Slot(2)]
            fake.tell(_Push(events))
            assert [session.next_event(timeout=5), session.next_event(timeout=5)] == events
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.timeout(30, method="thread")
def test_second_interrupt_during_the_withdrawal_keeps_the_filled_batch() -> None:
    """Item 1: the take is filled while the first interrupt is handled, and a second
    interrupt lands while the facade withdraws it: the batch is kept, the first re-raised."""
    main = threading.main_thread().ident or 0
    entered, filled = threading.Event(), threading.Event()
    count = [0]

    def handler(_signum: int, _frame: FrameType | None) -> None:
        count[0] += 1
        if count[0] == 1:
            entered.set()
            assert filled.wait(5)  # the take is filled while this handler runs
            raise First
        raise Second

    def on_cancel(n: int) -> None:
        if n == 1:  # the facade is blocked in ask(CancelTake): interrupt it again
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with _fake_session(on_cancel) as (session, fake):
            events = [Slot(1), Slot(2), Slot(3)]

            def interrupt_then_fill() -> None:
                wait_for(lambda: fake.ask("state")[0] == 1 and _main_thread_waits(), 5,
                         "the facade waiting on its take")
                signal.pthread_kill(main, signal.SIGUSR1)
                assert entered.wait(5)
                fake.tell(_Push(events))
                wait_for(lambda: fake.ask("state")[0] == 0, 5, "the take filled")
                filled.set()

            threading.Thread(target=interrupt_then_fill, daemon=True).start()
            with pytest.raises(First):
                session.next_event(timeout=None)
            assert count[0] == 2
            assert fake.ask("state") == (0, 2)  # asked twice, nothing left registered
            assert [session.next_event(timeout=0) for _ in events] == events
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_non_numeric_timeouts_are_refused_before_anything_is_asked(sim: LocalSimulator
                                                                   ) -> None:
    """Item 13/1: a bad ``timeout`` is a TypeError naming it, and takes or sends nothing."""
    first, _ = sim.available_range()
    end = first + 30
    tx = list(sim.addresses[:2])
    session = start(sim, first, end)
    try:
        session.subscribe_transactions(tx)
        sid = session.session_info.session_id
        events: list[ManagedEvent] = []
        while not events or not isinstance(events[-1], Completed):
            for bad in ("1", [1], object()):
                with pytest.raises(TypeError, match="^timeout"):
                    session.next_event(timeout=bad)  # type: ignore[arg-type]
            for worse in (-1, float("nan")):
                with pytest.raises(ValueError, match="^timeout"):
                    session.next_event(timeout=worse)
            event = session.next_event(timeout=10)
            events.append(event)
            if isinstance(event, ReadyForContinue):
                before = sim.session_stats(sid).continues_received
                with pytest.raises(TypeError, match="^timeout"):
                    session.send_continue(ContinueParams(), timeout="10")  # type: ignore[arg-type]
                assert session.stats()["continue_state"] != "outstanding"
                assert sim.session_stats(sid).continues_received == before
                session.send_continue(ContinueParams(), timeout=10)
    finally:
        session.shutdown()
    check_exact(events, sim.expected(first, end, transactions=tx))


# --- item 5: Timing.connect bounds the whole connect ------------------------------------


class _TricklingServer:
    """Reads an upgrade request, then answers ``101`` one byte per ``pace`` seconds.

    Records, per connection, how long the client stayed before closing.
    Its own thread; every connection ends within ``limit`` seconds.
    """

    def __init__(self, pace: float = 0.1, limit: float = 8.0) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._pace = pace
        self._limit = limit
        self._stop = threading.Event()
        self.held: list[float] = []  # seconds from accept to the client's close
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="trickle")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" + (
            b"X-Pad: " + b"a" * 4000 + b"\r\n")
        conn.settimeout(self._pace)
        request = b""
        sent = 0
        with conn:
            while not self._stop.is_set() and time.monotonic() - accepted < self._limit:
                try:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break  # the client closed (or shut down) its socket
                    request += chunk
                except TimeoutError:
                    pass
                except OSError:
                    break
                if b"\r\n\r\n" in request and sent < len(reply):
                    try:
                        conn.sendall(reply[sent:sent + 1])
                    except OSError:
                        break
                    sent += 1
            self.held.append(time.monotonic() - accepted)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(2)
        for thread in self._threads:
            thread.join(2)


def test_trickled_upgrade_reply_is_bounded_by_timing_connect() -> None:
    """Item 5: the whole connect (TCP + TLS + upgrade) fits in ``Timing.connect``."""
    timing = Timing(connect=1.0, handshake=1.0, keepalive_interval=0.05,
                    keepalive_deadline=0.25, graceful_close=0.5)
    policy = ReconnectPolicy(initial=0.01, max_delay=0.02, max_attempts=1, jitter=0)
    server = _TricklingServer(pace=0.1, limit=8.0)
    started = time.monotonic()
    try:
        with no_leaks(3.0):
            error = _bounded(lambda: ManagedBacktestSession.start(
                f"ws://127.0.0.1:{server.port}", "key", CreateSession(1, 2), timing=timing,
                policy=policy), 20)
        elapsed = time.monotonic() - started
        wait_for(lambda: len(server.held) == 2, 5, "both connections to end")
    finally:
        server.close()
    assert isinstance(error, ManagedSessionError) and error.kind == "create"
    assert "connect timed out after 1.0s" in str(error)
    # Two attempts (the first and one restart), each cut at the connect bound.
    assert elapsed < 2 * timing.connect + 1.0
    assert all(held < timing.connect + 0.5 for held in server.held), server.held


# --- item 12: more than 1024 open file descriptors ---------------------------------------


def test_a_process_holding_1100_fds_runs_a_session_to_completion(sim: LocalSimulator) -> None:
    """Item 12: ``select()`` refused fds >= 1024; the reader's readiness check must not."""
    needed = 1300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        probe = socket.socket()
        assert probe.fileno() > 1024  # every socket from here on is out of select()'s range
        probe.close()
        first, _ = sim.available_range()
        end = first + 60
        tx, diffs = list(sim.addresses[:3]), list(sim.addresses[1:4])
        session = start(sim, first, end)
        try:
            session.subscribe_transactions(tx)
            session.subscribe_account_diffs(diffs)
            events = drive(session)
            stats = session.stats()
        finally:
            session.shutdown()
    finally:
        for fd in held:
            os.close(fd)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    check_exact(events, sim.expected(first, end, transactions=tx, account_diffs=diffs))
    assert stats["reconnects"] == {"control": 0, "transactions": 0, "account_diffs": 0}


# --- item 13: every entry point validates its arguments up front --------------------------


def test_start_rejects_bad_arguments_before_connecting(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    create = CreateSession(first, first + 5)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"url": 123}, TypeError, "url"),
        ({"url": b"ws://127.0.0.1:1/backtest"}, TypeError, "url"),
        ({"api_key": 5}, TypeError, "api_key"),
        ({"create": (first, first + 5)}, TypeError, "create"),
        ({"timing": "x"}, TypeError, "timing"),
        ({"timing": {"connect": 1}}, TypeError, "timing"),
        ({"policy": "x"}, TypeError, "policy"),
        ({"listener": "x"}, TypeError, "listener"),
        ({"listener": object()}, TypeError, "listener"),
        ({"sslopt": "x"}, TypeError, "sslopt"),
        ({"sslopt": {1: "x"}}, TypeError, "sslopt"),
        ({"max_queue": "5000"}, ValueError, "max_queue"),
        ({"max_frame_size": 2.5}, ValueError, "max_frame_size"),
    ]
    for override, kind, field in cases:
        kwargs: dict[str, Any] = {"url": sim.url, "api_key": DEFAULT_API_KEY,
                                  "create": create, "timing": FAST, "policy": QUICK_RETRY}
        kwargs.update(override)
        url, key, made = kwargs.pop("url"), kwargs.pop("api_key"), kwargs.pop("create")
        with no_leaks(2.0):
            error = _bounded(lambda: ManagedBacktestSession.start(  # noqa: B023
                url, key, made, **kwargs), 5)  # noqa: B023
        assert type(error) is kind, (override, error)
        assert str(error).startswith(f"{field}:"), (override, str(error))
    assert sim.upgrade_requests() == {}


VALID = "So11111111111111111111111111111111111111112"
BAD_ADDRESSES = [
    "0" * 43,                # '0' is not in the base58 alphabet
    "I" + "1" * 42,          # neither is 'I'
    "l" * 40,                # nor 'l'
    "O" * 40,                # nor 'O'
    "1" * 31,                # too short
    "2" * 45,                # too long
    "z" * 44,                # base58, but more than 32 bytes
    " " + VALID[1:],         # blank
]


def test_subscriptions_take_only_base58_public_keys(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    assert all(32 <= len(a) <= 44 for a in sim.addresses)  # the chain's own are valid
    session = start(sim, first, first + 5)
    try:
        for bad in BAD_ADDRESSES:
            for subscribe in (session.subscribe_transactions, session.subscribe_account_diffs):
                with pytest.raises(ValueError, match=r"^addresses\[1\]"):
                    subscribe([sim.addresses[0], bad])
        assert sim.upgrade_requests() == {"control": 1}  # no subscription was started
        session.subscribe_transactions([sim.addresses[0], VALID])
        wait_for(lambda: sim.upgrade_requests().get("pubsub") == 1, 5, "the subscription")
    finally:
        session.shutdown()


def test_cli_refuses_a_bad_address_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and one line, as the README promises, before the simulator starts."""
    started = time.monotonic()
    code = cli_main(["run", "--transactions", VALID, "--account-diffs", "0xdeadbeef"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("backtest-actors run: --account-diffs: expected a base58 public key")
    assert err.count("\n") == 1
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("make,field", [
    (lambda: ContinueParams(advance_count=2**64), "advance_count"),
    (lambda: ContinueParams(advance_count=2**80), "advance_count"),
    (lambda: ContinueParams(advance_count=1.0), "advance_count"),
    (lambda: CreateSession(2**64, 2**64), "start_slot"),
    (lambda: CreateSession(1, 2**64), "end_slot"),
    (lambda: CreateSession(1, 2, disconnect_timeout_secs=-1), "disconnect_timeout_secs"),
    (lambda: CreateSession(1, 2, capacity_wait_timeout_secs=2**16),
     "capacity_wait_timeout_secs"),
    (lambda: CreateSession(1, 2, extra_compute_units=2**32), "extra_compute_units"),
    (lambda: CreateSession(1, 2, signer_filter=(VALID, "not-base58")), "signer_filter[1]"),
    (lambda: CreateSession(1, 2, send_summary=1), "send_summary"),
    (lambda: ContinueParams(modify_account_states={"0x12": None}),
     "modify_account_states[0x12]"),
])
def test_request_fields_are_bounded_by_their_wire_types(make: Callable[[], Any],
                                                         field: str) -> None:
    escaped = field.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises((ValueError, TypeError), match=f"^{escaped}"):
        make()


def test_largest_wire_values_are_accepted() -> None:
    assert ContinueParams(advance_count=2**64 - 1).advance_count == 2**64 - 1
    assert CreateSession(2**64 - 1, 2**64 - 1, capacity_wait_timeout_secs=2**16 - 1,
                         extra_compute_units=2**32 - 1, signer_filter=(VALID,)).end_slot == (
        2**64 - 1)


def test_send_continue_revalidates_params_before_sending(sim: LocalSimulator) -> None:
    """A frozen instance changed behind attrs' back is still refused before the wire."""
    first, _ = sim.available_range()
    session = start(sim, first, first + 5)
    try:
        while not isinstance(session.next_event(timeout=5), ReadyForContinue):
            pass
        params = ContinueParams()
        object.__setattr__(params, "advance_count", 2**80)
        with pytest.raises(ValueError, match="^advance_count"):
            session.send_continue(params, timeout=5)
        assert session.stats()["continues_written"] == 0
        sid = session.session_info.session_id
        assert sim.session_stats(sid).continues_received == 0
        session.send_continue(attrs.evolve(params, advance_count=1), timeout=5)
        assert session.stats()["continues_written"] == 1
    finally:
        session.shutdown()
