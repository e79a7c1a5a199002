"""ContinuePacer as a plain state machine: no actor, no socket, no clock."""

from __future__ import annotations

from actors.decisions.pacer import ContinuePacer
from actors.events import Completed, ContinueLost, ReadyForContinue, Slot
from protocol import (
    ContinueParams,
)
from protocol.pubsub import PUBSUB_BUFFER_SLOTS


def up_gate(*streams: str, **kwargs: object) -> ContinuePacer:
    gate = ContinuePacer(**kwargs)  # type: ignore[arg-type]
    for name in streams:
        gate.add_stream(name)
        gate.link_up(name)
    gate.link_up("control")
    return gate


def run_chunk(gate: ContinuePacer, first_slot: int, generation: int = 1) -> int:
    """Write the next chunk and report its slots; returns how many blocks it had."""
    chunk = gate.next_chunk()
    assert chunk is not None
    gate.handed()
    gate.written(generation, None)
    for slot in range(first_slot, first_slot + chunk.advance_count):
        assert gate.absorb(Slot(slot)) == Slot(slot)
    return chunk.advance_count


def test_a_large_continue_is_split_and_answered_once() -> None:
    gate = up_gate("transactions", max_run_ahead=80)
    params = ContinueParams(advance_count=200, transactions=("AQID",))
    gate.submit(params, reply=None)
    chunk = gate.next_chunk()
    assert chunk == ContinueParams(advance_count=80, transactions=("AQID",))  # user's txs first
    gate.handed()
    assert gate.written(1, None)  # the first chunk of the user's continue
    # Past half the budget a barrier goes out early.
    sent: list[tuple[str, bytes]] = []
    for slot in range(1, 81):
        gate.absorb(Slot(slot))
        sent += gate.barriers_due()
    assert [name for name, _ in sent] == ["transactions"]
    assert gate.absorb(ReadyForContinue()) is None  # the end of a chunk: absorbed
    assert gate.next_chunk() is None  # lag 80: held until the barrier comes back
    assert gate.stats["chunk_holds"] == 1
    gate.barrier_reached("transactions", sent[0][1])  # confirmed through slot 40
    chunk = gate.next_chunk()
    assert chunk == ContinueParams(advance_count=40)  # later chunks carry no transactions
    gate.handed()
    assert not gate.written(1, None)


def test_the_lag_never_exceeds_the_budget_whatever_the_barrier_timing() -> None:
    gate = up_gate("transactions", "account_diffs", max_run_ahead=80)
    gate.submit(ContinueParams(advance_count=1000), reply=None)
    slot, worst = 1, 0
    pending: list[tuple[str, bytes]] = []
    while gate.state != "idle":
        chunk = gate.next_chunk()
        if chunk is None:
            pending += gate.barriers_due()
            assert pending, "held with no barrier in flight: a hang"
            gate.barrier_reached(*pending.pop(0))
            continue
        gate.handed()
        gate.written(1, None)
        for _ in range(chunk.advance_count):
            gate.absorb(Slot(slot))
            slot += 1
            pending += gate.barriers_due()
            worst = max(worst, gate.executed - min(
                gate._streams[n].confirmed for n in gate._streams))  # noqa: SLF001
        answer = gate.absorb(ReadyForContinue())
        assert (answer is None) == (gate.state != "idle")
    assert slot == 1001
    assert worst <= 80 < PUBSUB_BUFFER_SLOTS


def test_nothing_is_written_while_a_link_is_down() -> None:
    gate = up_gate("transactions")
    gate.link_down("transactions")
    gate.submit(ContinueParams(), reply=None)
    assert gate.next_chunk() is None
    gate.link_up("transactions")
    assert gate.next_chunk() == ContinueParams()


def test_a_chunk_handed_to_a_dying_link_is_given_back() -> None:
    gate = up_gate()
    gate.submit(ContinueParams(advance_count=5), reply=None)
    assert gate.next_chunk() == ContinueParams(advance_count=5)
    gate.handed()
    gate.link_down("control")
    assert gate.state == "pending"
    gate.link_up("control")
    assert gate.next_chunk() == ContinueParams(advance_count=5)


def test_completed_waits_for_every_stream_to_confirm_the_last_slot() -> None:
    gate = up_gate("transactions")
    gate.submit(ContinueParams(advance_count=3), reply=None)
    run_chunk(gate, 1)
    assert gate.absorb(Completed(None)) is None
    assert not gate.completed_due()
    [(name, token)] = gate.barriers_due()
    gate.barrier_reached(name, token)
    assert gate.completed_due() and gate.completed_done
    assert not gate.completed_due()  # once


def test_lost_continue_needs_all_the_evidence() -> None:
    gate = up_gate()
    gate.submit(ContinueParams(advance_count=2, transactions=("AQID",)), reply=None)
    gate.next_chunk()
    gate.handed()
    gate.written(1, 6)
    gate.link_down("control")
    assert not gate.control_resumed(1)  # the same connection: no evidence
    gate.link_up("control")
    assert gate.control_resumed(2)
    assert gate.quiet_window_over(2, 7) is None  # something newer came: it arrived
    lost = gate.quiet_window_over(2, 6)
    assert lost == ContinueLost(ContinueParams(advance_count=2, transactions=("AQID",)),
                                resent=True)
    assert gate.next_chunk() == ContinueParams(advance_count=2, transactions=("AQID",))
    gate.handed()
    assert not gate.written(2, 6)  # a resend is not a new user continue
    assert gate.stats["lost_continues"] == 1 and gate.stats["continues_resent"] == 1


def test_lost_continue_with_policy_raise_is_handed_back() -> None:
    gate = up_gate(on_lost_continue="raise")
    gate.submit(ContinueParams(advance_count=4), reply=None)
    gate.next_chunk()
    gate.handed()
    gate.written(1, None)
    assert gate.quiet_window_over(2, None) == ContinueLost(ContinueParams(advance_count=4),
                                                           resent=False)
    assert gate.state == "idle"


def test_a_late_answer_calls_the_resend_off_and_a_second_answer_is_a_double_advance() -> None:
    gate = up_gate()
    gate.submit(ContinueParams(), reply=None)
    gate.next_chunk()
    gate.handed()
    gate.written(1, 3)
    assert gate.quiet_window_over(2, 3) is not None  # judged lost, resend pending
    assert gate.absorb(ReadyForContinue()) == ReadyForContinue()  # it was not lost
    assert gate.state == "idle" and gate.stats["continues_resent"] == 0
    assert gate.stats["double_advances"] == 0
    gate.absorb(ReadyForContinue())  # answered twice
    assert gate.stats["double_advances"] == 1


def test_gap_is_the_executed_slots_that_fell_out_of_the_buffer() -> None:
    gate = up_gate("transactions", max_run_ahead=10_000)
    gate.submit(ContinueParams(advance_count=300), reply=None)
    gate.next_chunk()
    gate.handed()
    gate.written(1, None)
    slots = [1000 + 2 * i for i in range(300)]  # every other slot skipped
    for slot in slots[:30]:
        gate.absorb(Slot(slot))
    gate.link_down("transactions")  # items delivered through slots[29]
    for slot in slots[30:]:
        gate.absorb(Slot(slot))
    gate.absorb(Completed(None))
    gate.resubscribing("transactions", delivered_through=slots[29])
    gate.link_up("transactions")
    gap = gate.gap_after_resume("transactions", ("addr",))
    assert gap is not None
    assert (gap.first_slot, gap.last_slot) == (slots[29], slots[-101])
    assert gap.slots == len(slots) - 100 - 29
    assert gate.gap_after_resume("transactions", ("addr",)) is None  # reported once


def test_a_link_lost_again_before_its_replay_came_reports_no_slot_twice() -> None:
    """Under load a re-subscribed link can drop again before any replayed item reached the
    application: the slots already reported as a gap are not reported a second time."""
    gate = up_gate("transactions", max_run_ahead=10_000)
    gate.submit(ContinueParams(advance_count=300), reply=None)
    gate.next_chunk()
    gate.handed()
    gate.written(1, None)
    slots = [1000 + 2 * i for i in range(300)]
    for slot in slots[:30]:
        gate.absorb(Slot(slot))
    gate.link_down("transactions")
    for slot in slots[30:]:
        gate.absorb(Slot(slot))
    gate.absorb(Completed(None))
    gate.resubscribing("transactions", delivered_through=slots[29])
    gate.link_up("transactions")
    first = gate.gap_after_resume("transactions", ("addr",))
    assert first is not None and first.last_slot == slots[-101]
    gate.link_down("transactions")  # nothing delivered since: the same delivered_through
    gate.resubscribing("transactions", delivered_through=slots[29])
    gate.link_up("transactions")
    assert gate.gap_after_resume("transactions", ("addr",)) is None
    assert gate.stats["gaps"] == 1


def test_no_gap_when_the_buffer_still_reaches_back() -> None:
    gate = up_gate("transactions")
    gate.submit(ContinueParams(advance_count=50), reply=None)
    run_chunk(gate, 1)
    gate.link_down("transactions")
    gate.absorb(ReadyForContinue())
    gate.resubscribing("transactions", delivered_through=10)
    gate.link_up("transactions")
    assert gate.gap_after_resume("transactions", ("addr",)) is None
    assert gate.replay_from("transactions", 10, 0) == 10


def test_a_resumed_pending_continue_is_lost_without_news_and_kept_with_it() -> None:
    """Attach from a cursor holding a continue sent at seqId 7 (the lost-continue rule)."""
    from actors.decisions.cursor import PendingContinue

    params = ContinueParams(advance_count=3)
    gate = up_gate()
    gate.resume(PendingContinue(params, 7))
    assert gate.pending_continue(7) == PendingContinue(params, 7)
    assert gate.control_resumed(1)  # the quiet window starts
    assert gate.quiet_window_over(1, 8) is None  # news after the write point: it arrived
    lost = gate.quiet_window_over(1, 7)
    assert lost == ContinueLost(params, resent=True)
    assert gate.next_chunk() == params
    answered = up_gate()
    answered.resume(PendingContinue(params, 7))
    assert answered.absorb(ReadyForContinue()) == ReadyForContinue()  # the replay answered it
    assert answered.state == "idle" and answered.pending_continue(9) is None


def test_a_resumed_stream_confirms_nothing_the_replay_reported() -> None:
    gate = ContinuePacer()
    gate.resume(None)
    gate.link_up("control")
    for slot in (10, 11, 12):
        gate.on_slot(slot)
    gate.add_stream("transactions", resumed=True)
    assert gate.replay_from("transactions", 9, 1) == 9  # not past what it still owes


def test_a_chunk_the_control_link_never_got_is_given_back() -> None:
    """The control actor died between the gate's decision and the tell (the supervisor
    had not yet heard of the loss): the chunk was taken but never handed over. It must
    come back, or the continue waits forever with every link up (seen in a sweep after
    a simulator-wide reset)."""
    gate = up_gate("transactions")
    gate.submit(ContinueParams(advance_count=1), reply=None)
    assert gate.next_chunk() == ContinueParams(advance_count=1)
    gate.not_written()  # the tell failed: nothing was handed
    assert gate.state == "pending"
    assert gate.next_chunk() == ContinueParams(advance_count=1)  # the same chunk again
    gate.handed()
    assert gate.written(2, None)


def test_gate_unsubscribe_confirms_every_executed_block_then_closes() -> None:

    gate = up_gate("transactions", "account_diffs", max_run_ahead=80)
    gate.submit(ContinueParams(advance_count=10), reply=None)
    run_chunk(gate, 1)
    assert gate.absorb(ReadyForContinue()) == ReadyForContinue()
    gate.unsubscribe("transactions")
    assert gate.streams_closed() == []  # 10 blocks not confirmed yet
    due = gate.barriers_due()
    assert [name for name, _ in due] == ["transactions"]  # at once, not at half the budget
    gate.submit(ContinueParams(advance_count=5), reply=None)
    assert gate.next_chunk() is None  # no block runs while it closes
    gate.barrier_reached("transactions", due[0][1])
    assert gate.streams_closed() == ["transactions"]
    assert gate.next_chunk() == ContinueParams(advance_count=5)  # then the session goes on
    assert not gate.closing("transactions")
