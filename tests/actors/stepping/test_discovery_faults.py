"""Precise stepping under real transport faults (the TCP fault proxy): control and
PubSub resets, blackholes around a continue-to, continue-tos lost in flight. Every
discovery delivered once, every pause reached once, no double advance at the server."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from actors import (
    Completed,
    ContinueLost,
    DiscoveryBatch,
    DiscoveryFilter,
    ManagedBacktestSession,
    ManagedEvent,
    Paused,
    ReadyForContinue,
)
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.chain import user_transaction
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import (
    FAST,
    FAULT_POLICY,
    FAULT_SERVER,
    check_exact,
    no_leaks,
    wait_for,
)

SPAN = 120


def _all_up(session: ManagedBacktestSession) -> bool:
    return all(type(s).__name__ == "Up" for s in session.status().values())


def _run(sim: LocalSimulator, proxy: FaultProxy,
         fault: Callable[[int, ManagedBacktestSession], object],
         before: Callable[[int], object] = lambda n: None,
         timing: object = FAST) -> tuple[list[ManagedEvent], dict[str, object]]:
    first, _ = sim.available_range()
    end = first + SPAN
    program = sim.programs[-1]
    addresses = list(sim.addresses[:3])
    probe = [user_transaction([addresses[0]], "probe")]
    expected = sim.expected(first, end, transactions=addresses, account_diffs=addresses,
                            discover=[program], inject=probe)
    assert len(expected.discoveries) >= 8
    create = CreateSession(first, end, discoveries=[DiscoveryFilter(program)])
    events: list[ManagedEvent] = []
    with no_leaks(FAST.graceful_close + 2):
        session = ManagedBacktestSession.start(
            proxy.url_for(sim.url), DEFAULT_API_KEY, create, timing=timing,  # type: ignore[arg-type]
            policy=FAULT_POLICY, transactions=addresses, account_diffs=addresses)
        try:
            steps, inject = 0, ()
            while True:
                before(steps + 1)
                step = session.advance_to_discovery(inject, timeout=30)
                events.extend(step.events)
                if step.exhausted:
                    break
                steps += 1
                inject = tuple(probe)
                fault(steps, session)
            session.send_continue(ContinueParams(10_000, inject), timeout=30)
            while not events or not isinstance(events[-1], Completed):
                events.append(session.next_event(timeout=30))
            stats = session.stats()
            sid = session.session_info.session_id
        finally:
            session.shutdown()
    check_exact(events, expected)
    discovered = [(e.slot, e.batch_index) for e in events if isinstance(e, DiscoveryBatch)]
    paused = [(e.slot, e.batch_index) for e in events if isinstance(e, Paused)]
    assert discovered == expected.discoveries, "a discovery lost or delivered twice"
    assert paused == expected.discoveries, "a pause missed or reached twice"
    server = sim.session_stats(sid)
    assert server.blocks_executed == len(expected.slots) - 1
    assert server.pauses == len(expected.discoveries)
    assert stats["double_advances"] == 0
    return events, stats


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_resets_and_blackholes_around_continue_to(seed: int) -> None:
    with LocalSimulator(seed=seed, slots=SPAN + 40, liveness=FAULT_SERVER) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:

        def fault(n: int, session: ManagedBacktestSession) -> None:
            if n % 3 == 0:
                wait_for(lambda: _all_up(session), 10, "every link back")
                {0: lambda: proxy.reset("control"), 1: lambda: proxy.reset("pubsub"),
                 2: lambda: proxy.blackhole("all")}[(n // 3) % 3]()

        _, stats = _run(sim, proxy, fault)
        assert sum(stats["reconnects"].values()) >= 3  # type: ignore[attr-defined]


def test_continue_to_lost_in_flight_is_written_again(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """Its bytes are held in a blackholed control link, then the link is reset: the
    continue-to never reached the server; the session judges it lost (nothing new
    within the quiet window after re-attaching) and writes it again, once."""
    sim, proxy = net
    first, _ = sim.available_range()
    end = first + SPAN
    program = sim.programs[-1]
    expected = sim.expected(first, end, discover=[program])
    losses = {2, 5, 8}
    timing = attrs.evolve(FAST, continue_quiet=0.2)
    create = CreateSession(first, end, discoveries=[DiscoveryFilter(program)])
    events: list[ManagedEvent] = []
    with no_leaks(FAST.graceful_close + 2):
        session = ManagedBacktestSession.start(proxy.url_for(sim.url), DEFAULT_API_KEY,
                                               create, timing=timing, policy=FAULT_POLICY)
        try:
            ahead: list[DiscoveryBatch] = []
            sent = 0
            while not events or not isinstance(events[-1], Completed):
                event = session.next_event(timeout=30)
                events.append(event)
                if isinstance(event, DiscoveryBatch):
                    ahead.append(event)
                if not isinstance(event, ReadyForContinue | Paused):
                    continue
                here = (event.slot, event.batch_index) if isinstance(event, Paused) else None
                ahead = [d for d in ahead if here is None or (d.slot, d.batch_index) > here]
                if not ahead:
                    session.send_continue(ContinueParams(10_000), timeout=30)
                    continue
                sent += 1
                if sent in losses:
                    wait_for(lambda: _all_up(session), 10, "the control link back")
                    proxy.blackhole("control")
                session.send_continue_to(ahead[0].continue_to(), timeout=30)
                if sent in losses:
                    proxy.reset("control")
            stats = session.stats()
            sid = session.session_info.session_id
        finally:
            session.shutdown()
    lost = [e for e in events if isinstance(e, ContinueLost)]
    assert len(lost) == len(losses) and all(e.resent for e in lost)
    assert all(type(e.params).__name__ == "ContinueToParams" for e in lost)
    assert [(e.slot, e.batch_index) for e in events if isinstance(e, Paused)] == (
        expected.discoveries)
    assert [(e.slot, e.batch_index) for e in events if isinstance(e, DiscoveryBatch)] == (
        expected.discoveries)
    server = sim.session_stats(sid)
    assert server.blocks_executed == len(expected.slots) - 1
    assert server.continues_received == len(expected.discoveries) + 1  # none twice
    assert stats["double_advances"] == 0 and stats["lost_continues"] == len(losses)
pytestmark = pytest.mark.backtest_simulator(seed=41, slots=SPAN + 40)
