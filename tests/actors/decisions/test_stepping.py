"""DiscoveryTracker: the next batch to pause before, from the events as delivered."""

from __future__ import annotations

from actors.decisions.stepping import DiscoveryTracker
from actors.events import DiscoveryBatch, Error, Paused, ReadyForContinue, Slot
from protocol import BacktestError


def test_the_oldest_announcement_ahead_of_the_rest_is_next() -> None:
    tracker = DiscoveryTracker()
    for event in (Slot(100), DiscoveryBatch(103, 1), ReadyForContinue()):
        tracker.seen(event)
    assert tracker.at_rest and tracker.next_discovery() == DiscoveryBatch(103, 1)
    tracker.continued()
    assert not tracker.at_rest
    for event in (Slot(101), Slot(102), DiscoveryBatch(103, 4), Paused(103, 1)):
        tracker.seen(event)
    # Paused before (103, 1): reached; the next is (103, 4), in the same block.
    assert tracker.next_discovery() == DiscoveryBatch(103, 4)
    assert (tracker.discoveries, tracker.pauses) == (2, 1)


def test_a_continue_past_announced_batches_drops_them() -> None:
    tracker = DiscoveryTracker()
    for event in (Slot(100), DiscoveryBatch(101, 0), ReadyForContinue(), Slot(101),
                  Slot(102), ReadyForContinue()):
        tracker.seen(event)
    assert tracker.next_discovery() is None  # none announced since: no more


def test_an_error_answer_is_a_rest_where_the_session_was() -> None:
    tracker = DiscoveryTracker()
    tracker.seen(Paused(50, 2))
    tracker.continued()
    tracker.seen(Error(BacktestError("invalidRequest")))
    assert tracker.at_rest and tracker.paused_at == (50, 2)


def test_a_step_takes_to_rest_sends_once_and_ends_on_the_answer() -> None:
    import pytest

    from actors.decisions.stepping import StepInProgress
    from actors.events import Completed, ContinueLost
    from protocol import ContinueToParams

    tracker = DiscoveryTracker()
    with pytest.raises(ValueError, match=r"transactions\[0\]"):
        StepInProgress(tracker, ["not base64!"])
    step = StepInProgress(tracker, ["AQID"])
    assert step.request() is None  # not at rest yet: take events
    for event in (Slot(10), DiscoveryBatch(12, 1), ReadyForContinue()):
        step.feed(event)
        tracker.seen(event)
    assert step.request() == ContinueToParams(12, 1, ("AQID",))
    tracker.continued()
    assert step.request() is None and step.result is None  # sent once
    lost = ContinueLost(ContinueToParams(12, 1), resent=False)
    for event in (Slot(11), lost):  # as a front door does: fed, then seen by the tracker
        step.feed(event)
        tracker.seen(event)
    assert step.result is not None and step.result.paused is None
    assert step.result.events[-1] == lost and len(step.result.events) == 5
    # Handed back as lost: the batch is still ahead, so the next step aims at it again.
    assert StepInProgress(tracker, ()).request() == ContinueToParams(12, 1)
    # No discovery at rest: exhausted, nothing to send.
    quiet = DiscoveryTracker()
    for event in (Slot(20), ReadyForContinue()):
        quiet.seen(event)
    other = StepInProgress(quiet, ())
    assert other.request() is None and other.result is not None and other.result.exhausted
    done = StepInProgress(DiscoveryTracker(), ())
    done.feed(Completed())
    assert done.result is not None and done.result.exhausted
