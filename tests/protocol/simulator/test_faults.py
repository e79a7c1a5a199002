"""Faults aimed at moments a test can name (a slot, the Nth block, the Nth continue),
and refused when that moment can never come."""

from __future__ import annotations

import pytest

from actors import ManagedBacktestSession, ReadyForContinue
from actors.testing import DeliveryMismatch, assert_exact, delivery_of
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator

pytestmark = pytest.mark.backtest_simulator(seed=4)


def skipped_slot(sim: LocalSimulator) -> int:
    first, last = sim.available_range()
    produced = set(sim.chain.produced)
    return next(s for s in range(first, last) if s not in produced)


def start(sim: LocalSimulator, slots: int) -> tuple[ManagedBacktestSession, object]:
    first, _ = sim.available_range()
    end = first + slots
    address = sim.addresses[0]
    session = ManagedBacktestSession.start(
        sim.url, DEFAULT_API_KEY, CreateSession(start_slot=first, end_slot=end),
        timing=sim.timing, policy=sim.policy, transactions=[address], account_diffs=[address])
    return session, sim.expected(first, end, transactions=[address], account_diffs=[address])


def test_a_slot_with_no_block_is_refused_when_aimed_at(sim: LocalSimulator) -> None:
    slot = skipped_slot(sim)
    with pytest.raises(ValueError, match=rf"at_slot: slot {slot} has no block"):
        sim.faults.drop("transactions", at_slot=slot)
    _, last = sim.available_range()
    with pytest.raises(ValueError, match=rf"at_slot: slot {last + 1} is outside"):
        sim.faults.blackhole("control", at_slot=last + 1)
    with pytest.raises(ValueError, match="at_block: expected a number >= 1"):
        sim.faults.drop("control", at_block=0)
    with pytest.raises(ValueError, match="give at most one"):
        sim.faults.drop("control", at_block=2, at_continue=2)
    assert sim.fault_counts()["drop"] == 0


def test_moments_a_session_has_passed_or_never_reaches_are_refused(sim: LocalSimulator
                                                                   ) -> None:
    session, expected = start(sim, 20)
    try:
        sid = session.session_info.session_id
        blocks = len(expected.slots) - 1  # the first slot is the anchor, not executed
        with pytest.raises(ValueError, match=rf"session {sid} can never reach block"):
            sim.faults.drop("control", at_block=blocks + 1, session_id=sid)
        with pytest.raises(ValueError, match=rf"will not execute slot {expected.slots[0]}"):
            sim.faults.drop("control", at_slot=expected.slots[0], session_id=sid)
        with pytest.raises(ValueError, match="session_id: no session 'nope'"):
            sim.faults.drop("control", at_block=1, session_id="nope")
        # Run 5 blocks and stop at the next Ready: the session still exists (a finished
        # one is gone from the server, and an aim at it is refused as unknown).
        while not isinstance(session.next_event(timeout=10), ReadyForContinue):
            pass
        session.send_continue(ContinueParams(advance_count=5), timeout=10)
        while not isinstance(session.next_event(timeout=10), ReadyForContinue):
            pass
        with pytest.raises(ValueError, match=rf"session {sid} can never reach block 2 "
                                              r"\(5 blocks executed"):
            sim.faults.drop("control", at_block=2, session_id=sid)
    finally:
        session.shutdown()


@pytest.mark.parametrize(("target", "aim"), [
    ("transactions", {"at_block": 3}),
    ("account_diffs", {"at_block": 7}),
    ("control", {"at_continue": 2}),
    ("control", {"at_block": 5}),
])
def test_an_aimed_drop_fires_once_and_the_run_stays_exact(sim: LocalSimulator, target: str,
                                                          aim: dict[str, int]) -> None:
    session, expected = start(sim, 40)
    received: list[object] = []
    try:
        sim.faults.drop(target, session_id=session.session_info.session_id, **aim)  # type: ignore[arg-type]
        session.run(advance=2, on_event=lambda event: received.append(event))
        assert session.stats()["reconnects"][target] >= 1
    finally:
        session.shutdown()
    assert_exact(received, expected)
    assert sim.fault_counts()["drop"] == 1


def test_assert_exact_names_what_differs() -> None:
    from actors import Slot, Transaction

    class Want:
        slots = [1, 2, 3]
        signatures = ["a", "b"]
        diff_keys: list[tuple[str, str]] = []

    got = [Slot(1), Slot(3), Transaction(slot=2, signature="b"),
           Transaction(slot=2, signature="b"), Transaction(slot=3, signature="c")]
    with pytest.raises(DeliveryMismatch) as caught:
        assert_exact(got, Want())
    assert caught.value.differences == [
        "slots: 1 missing: 2",
        "signatures: 1 missing: 'a'",
        "signatures: 1 delivered more than once: 'b'",
        "signatures: 1 not expected: 'c'",
    ]
    swapped = [Slot(1), Slot(3), Slot(2)]
    with pytest.raises(DeliveryMismatch, match="out of order from position 1: got 3"):
        assert_exact(swapped + [Transaction(slot=2, signature=s) for s in "ab"], Want())
    assert delivery_of(got).slots == [1, 3]
