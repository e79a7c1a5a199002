"""``subscribe_actions``: one ``ActionResult`` per scheduled action, in order, before
``Completed``, through resets of the PubSub links (the TCP fault proxy)."""

from __future__ import annotations

import pytest

from actors import ActionResult, Completed, ManagedBacktestSession, ManagedEvent, ReadyForContinue
from protocol import ContinueParams, CreateSession, ScheduledAction
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import FAST, FAULT_POLICY, check_exact, no_leaks, wait_for

pytestmark = pytest.mark.backtest_simulator(seed=29, slots=300)
TX = "AQID"


def test_action_results_come_once_each_in_order_through_link_resets(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net
    first, _ = sim.available_range()
    end = first + 150
    actions = [ScheduledAction(first + 10 * k, [TX], f"a{k}") for k in range(1, 15)]
    actions.append(ScheduledAction(first + 30, [TX, TX], "twin"))
    expected = sim.expected(first, end, transactions=[sim.addresses[0]], actions=actions)
    events: list[ManagedEvent] = []
    readies = 0
    with no_leaks(FAST.graceful_close + 2):
        with ManagedBacktestSession.start(proxy.url_for(sim.url), DEFAULT_API_KEY,
                                          CreateSession(first, end, actions=actions),
                                          timing=FAST, policy=FAULT_POLICY) as session:
            session.subscribe_actions()
            session.subscribe_transactions([sim.addresses[0]])
            while not events or not isinstance(events[-1], Completed):
                events.append(session.next_event(timeout=20))
                if isinstance(events[-1], ReadyForContinue):
                    readies += 1
                    if readies % 6 == 0:  # the action link (and the other) reset, unannounced
                        wait_for(lambda: all(type(s).__name__ == "Up"
                                             for s in session.status().values()), 10, "links up")
                        proxy.reset("pubsub")
                    session.send_continue(ContinueParams(advance_count=2), timeout=20)
            stats = session.stats()
    results = [e for e in events if isinstance(e, ActionResult)]
    assert [(r.action_index, r.slot) for r in results] == expected.actions
    assert len(results) == len(actions)
    assert [r.label for r in results] == [actions[i].label for i, _ in expected.actions]
    check_exact(events, expected)  # and the transactions beside them
    completed_at = next(i for i, e in enumerate(events) if isinstance(e, Completed))
    assert all(events.index(r) < completed_at for r in results)
    assert stats.reconnects["actions"] >= 3  # type: ignore[index]
