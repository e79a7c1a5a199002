"""Real network faults, through the TCP fault proxy: the server is never told.

The client and the simulator talk through :class:`FaultProxy`; a fault breaks
the transport between them (reset, half-open, blackhole) and each end must
find out by itself, the way it would on a real network. Every run must still
deliver every event exactly once and advance the server exactly once per slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import pytest

from actors import (
    ConnectionChanged,
    ContinueLost,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Reconnecting,
)
from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator, ServerLiveness
from protocol.simulator.proxy import FaultProxy, Which
from tests.support.harness import FAST, FAULT_POLICY, check_exact, no_leaks, wait_for

SLOTS = 120
# The client's default policy (0.5 s doubling, 10 attempts), seeded.
DEFAULT_POLICY = ReconnectPolicy(rng=random.Random(0))


pytestmark = pytest.mark.backtest_simulator(seed=41, slots=SLOTS + 50)


def run_through(sim: LocalSimulator, proxy: FaultProxy,
                fault: Callable[[int, ManagedBacktestSession], object], *, advance: int = 2,
                timing: Timing = FAST, policy: ReconnectPolicy = FAULT_POLICY,
                before_write: Callable[[int], object] = lambda n: None,
                ) -> tuple[list[ManagedEvent], dict[str, object], str]:
    """Drive a session with both streams; ``before_write(n)`` runs before the n-th
    continue is handed over, ``fault(n, session)`` after it is written."""
    first, _ = sim.available_range()
    end = first + SLOTS
    addresses = list(sim.addresses[:3])
    expected = sim.expected(first, end, transactions=addresses, account_diffs=addresses)
    with no_leaks(timing.graceful_close + 2):
        session = ManagedBacktestSession.start(proxy.url_for(sim.url), DEFAULT_API_KEY,
                                               CreateSession(first, end), timing=timing,
                                               policy=policy)
        try:
            session.subscribe_transactions(addresses)
            session.subscribe_account_diffs(addresses)
            events: list[ManagedEvent] = []
            written = 0
            while True:
                event = session.next_event(timeout=20)
                events.append(event)
                if isinstance(event, ReadyForContinue):
                    before_write(written + 1)
                    session.send_continue(ContinueParams(advance_count=advance), timeout=20)
                    written += 1
                    fault(written, session)
                elif type(event).__name__ == "Completed":
                    break
            stats = session.stats()
            sid = session.session_info.session_id
        finally:
            session.shutdown()
    check_exact(events, expected)
    server = sim.session_stats(sid)
    assert server.blocks_executed == len(expected.slots) - 1  # never advanced twice
    assert stats["double_advances"] == 0
    return events, stats, sid


def once_back(proxy: FaultProxy, which: Which, count: int) -> bool:
    """The links hit by the previous fault are connected again (the session may run
    on while a silent link is not yet found dead: the replay horizon allows it)."""
    wait_for(lambda: proxy.connections(which) == count, 10, f"{count} {which} connections")
    return True


def test_control_reset_mid_continue(net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net
    # Three resets: with the default policy a link that fails again within
    # uptime_reset (60 s) keeps doubling its delay (0.5, 1, 2 s here).
    _, stats, _ = run_through(sim, proxy, lambda n, _: n in (3, 20, 40) and once_back(
        proxy, "control", 1) and proxy.reset("control"), policy=DEFAULT_POLICY)
    assert stats["reconnects"]["control"] == 3  # type: ignore[index]
    assert proxy.counts()["reset"] == 3


def test_half_open_control_connection(net: tuple[LocalSimulator, FaultProxy]) -> None:
    """The client's side vanishes without a word; the server keeps the old owner until
    its own keepalive finds it dead, and answers re-attaches sessionOwnershipBusy."""
    sim, proxy = net
    _, stats, _ = run_through(sim, proxy, lambda n, _: n in (5, 25) and once_back(
        proxy, "control", 1) and proxy.half_open("control", side="client"),
        policy=DEFAULT_POLICY)
    assert stats["reconnects"]["control"] >= 2  # type: ignore[index]
    assert proxy.counts()["half_open"] == 2


def test_half_open_pubsub_connection(net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net
    _, stats, _ = run_through(sim, proxy, lambda n, _: n in (4, 20, 40) and once_back(
        proxy, "pubsub", 2) and proxy.half_open("pubsub", side="client"),
        policy=DEFAULT_POLICY)
    reconnects = stats["reconnects"]
    assert reconnects["transactions"] + reconnects["account_diffs"] >= 6  # type: ignore[index]


def test_blackhole_both_ways(net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net

    def blackhole(n: int, session: ManagedBacktestSession) -> None:
        if n in (6, 30):
            # The previous blackhole's links were found dead and replaced.
            wait_for(lambda: sum(session.stats()["reconnects"].values()) >= 3 * (n > 6)
                     and all(type(s).__name__ == "Up" for s in session.status().values()),
                     10, "every link back")
            proxy.blackhole("all")

    _, stats, _ = run_through(sim, proxy, blackhole, policy=DEFAULT_POLICY)
    reconnects = stats["reconnects"]
    assert all(reconnects[name] >= 2 for name in ("control", "transactions",  # type: ignore[index]
                                                  "account_diffs"))


def test_twenty_continues_lost_in_flight_through_the_proxy(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """The continue's bytes are held in a blackholed proxy, then the connection is
    reset: it never reaches the server, every time, and the session writes it again."""
    sim, proxy = net
    losses = set(range(2, 42, 2))
    timing = attrs.evolve(FAST, continue_quiet=0.2)
    hold = lambda n: n in losses and proxy.blackhole("control")  # noqa: E731
    fault = lambda n, _: n in losses and proxy.reset("control")  # noqa: E731
    events, stats, _ = run_through(sim, proxy, fault, timing=timing, before_write=hold)
    lost = [e for e in events if isinstance(e, ContinueLost)]
    assert len(lost) == 20 and all(e.resent for e in lost)
    assert stats["lost_continues"] == 20 and stats["continues_resent"] == 20


def test_half_open_owner_with_scaled_real_defaults() -> None:
    """The client's side is reset (it knows at once); the server's side is left open
    and silent, so the server keeps a dead owner until its keepalive finds it, and
    answers every re-attach sessionOwnershipBusy until then. The real defaults
    (server 15 s / 45 s; client policy 0.5 s doubling to 30 s, 10 attempts) scaled
    by 1/100: the client's budget outlives the server's deadline (see
    ReconnectPolicy's docstring for the arithmetic at full scale)."""
    scale = 0.01
    server = ServerLiveness(keepalive_interval=15 * scale, keepalive_deadline=45 * scale)
    policy = ReconnectPolicy(initial=0.5 * scale, max_delay=30 * scale, max_total=300 * scale,
                             uptime_reset=60 * scale, rng=random.Random(1))
    timing = Timing(connect=2, handshake=180 * scale, keepalive_interval=15 * scale,
                    keepalive_deadline=45 * scale, graceful_close=1)
    with LocalSimulator(seed=42, slots=SLOTS + 50, liveness=server) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        events, stats, _ = run_through(
            sim, proxy, lambda n, _: n == 10 and proxy.reset("control", side="client"),
            timing=timing, policy=policy)
    busy = [e for e in events if isinstance(e, ConnectionChanged) and isinstance(
        e.status, Reconnecting) and "sessionOwnershipBusy" in e.status.reason]
    assert busy, "the server must have held the dead owner for a while"
    assert stats["reconnects"]["control"] >= len(busy) + 1  # type: ignore[index]


def test_lost_barrier_pongs_are_written_again(net: tuple[LocalSimulator, FaultProxy]) -> None:
    """A barrier's pong vanishes on the way (as with a server that keeps only its
    latest pong): a later keepalive pong proves it, and the barrier is written
    again on the same connection; no restart, nothing held for ever."""
    sim, proxy = net
    proxy.lose_pongs(2, "pubsub", prefix=b"gate-")
    _, stats, _ = run_through(sim, proxy, lambda n, _: None)
    assert proxy.stats()["pongs_lost"] == 2
    reconnects = stats["reconnects"]
    assert reconnects["transactions"] == reconnects["account_diffs"] == 0  # type: ignore[index]


def test_barrier_pongs_lost_again_and_again_restart_the_link(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """Every barrier pong lost: after a few rewrites the link counts as dead and
    restarts with replay; the session still ends exact once the losses stop."""
    sim, proxy = net
    proxy.lose_pongs(12, "pubsub", prefix=b"gate-")
    _, stats, _ = run_through(sim, proxy, lambda n, _: None)
    assert proxy.stats()["pongs_lost"] == 12
    reconnects = stats["reconnects"]
    assert reconnects["transactions"] + reconnects["account_diffs"] >= 1  # type: ignore[index]


def test_a_corrupted_frame_fails_its_connection_and_the_stream_resumes_exact(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """A data frame with a reserved bit set (a broken middlebox) cannot be framed
    past: the reader names it, that connection restarts, the replay fills in,
    and nothing is lost or delivered twice. Mid-stream: 20 frames pass first."""
    sim, proxy = net
    proxy.corrupt_frames(1, "pubsub", after=20)
    events, stats, _ = run_through(sim, proxy, lambda n, _: None)
    assert proxy.stats()["frames_corrupted"] == 1
    reconnects = stats["reconnects"]
    assert reconnects["transactions"] + reconnects["account_diffs"] == 1  # type: ignore[index]
    reasons = [e.status.reason for e in events
               if isinstance(e, ConnectionChanged) and isinstance(e.status, Reconnecting)]
    assert reasons == ["FramingError: reserved bits set (0x40) with no extension negotiated"]
