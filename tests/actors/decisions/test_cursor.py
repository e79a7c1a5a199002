"""The cursor and its tracker as plain values: where a resume starts, from what the
application has seen (no session, no socket)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.decisions.cursor import (
    SETTLE_EVERY,
    Cursor,
    CursorError,
    CursorTracker,
    ItemDelta,
    PendingContinue,
    SeqDelta,
    check_cursor,
)
from actors.events import ReadyForContinue, SessionInfo, Slot, Transaction
from protocol import ContinueParams, CreateSession

CREATE = CreateSession(start_slot=100, end_slot=200)
INFO = SessionInfo("s-1", "/backtest/s-1")


def test_a_fresh_tracker_resumes_every_stream_from_the_start_slot() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("transactions", ("A", "B"))
    cursor = tracker.cursor(INFO)
    assert cursor.last_seq is None and cursor.pending_continue is None
    stream = cursor.streams["transactions"]
    assert stream.replay_slots == {"A": 100, "B": 100} and stream.boundary_slot == -1


def test_items_move_the_boundary_slot_and_keep_its_keys() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("transactions", ("A",))
    for slot, key in [(101, "s1"), (103, "s2"), (103, "s3"), (102, "late")]:
        tracker.returned(Transaction(slot=slot, signature=key),
                         ItemDelta("transactions", "A", slot, key))
    stream = tracker.cursor(INFO).streams["transactions"]
    # The newest slot and every key seen at it: a replay from 103 drops those two.
    assert stream.boundary_slot == 103 and stream.boundary_keys == {"s2", "s3"}
    assert stream.replay_slots == {"A": 103}


def test_a_continue_is_pending_until_an_answer_reaches_the_application() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.returned(Slot(100), SeqDelta(4))
    params = ContinueParams(advance_count=3)
    tracker.continue_sent(params)
    assert tracker.cursor(INFO).pending_continue == PendingContinue(params, 4)
    tracker.returned(Slot(101), SeqDelta(5))  # progress, not an answer
    assert tracker.cursor(INFO).pending_continue == PendingContinue(params, 4)
    tracker.returned(ReadyForContinue(), SeqDelta(6))
    cursor = tracker.cursor(INFO)
    assert cursor.pending_continue is None and cursor.last_seq == 6


def test_an_unsubscribed_stream_is_not_resumed_and_its_late_items_move_nothing() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("account_diffs", ("A",))
    tracker.unsubscribed("account_diffs")
    tracker.apply(ItemDelta("account_diffs", "A", 150, ("sig", "A")))
    assert tracker.cursor(INFO).streams == {}


def test_items_noted_in_bulk_land_in_order_and_stay_bounded() -> None:
    """The consumer notes a returned item with one call (``item_returned``) and the
    tracker applies them later in bulk: a cursor read at any point sees exactly the
    items returned so far, and the tracker never holds more than SETTLE_EVERY unapplied."""
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("transactions", ("A",))
    tracker.subscribed("account_diffs", ("A",))
    for n in range(3 * SETTLE_EVERY + 5):
        slot = 100 + n // 100
        tracker.returned(Transaction(slot=slot, signature=f"s{n}"),
                         ItemDelta("transactions", "A", slot, f"s{n}"))
        tracker.item_returned(ItemDelta("account_diffs", "A", slot, (f"s{n}", "A")))
        if n == 150:  # mid-slot 101: exactly the 51 keys of 101 returned so far
            mid = tracker.cursor(INFO).streams
            assert mid["transactions"].boundary_slot == 101
            assert mid["transactions"].boundary_keys == {f"s{k}" for k in range(100, 151)}
            assert mid["account_diffs"].boundary_keys == {
                (f"s{k}", "A") for k in range(100, 151)}
        assert len(tracker._items_returned) <= 2 * SETTLE_EVERY  # noqa: SLF001
    streams = tracker.cursor(INFO).streams
    last = 3 * SETTLE_EVERY + 4
    keys = {f"s{k}" for k in range(last - last % 100, last + 1)}
    assert streams["transactions"].boundary_slot == 100 + last // 100
    assert streams["transactions"].boundary_keys == keys
    assert streams["account_diffs"].boundary_keys == {(k, "A") for k in keys}


def test_items_noted_before_an_unsubscribe_do_not_reach_a_later_subscribe() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("transactions", ("A",))
    tracker.item_returned(ItemDelta("transactions", "A", 150, "old"))
    tracker.unsubscribed("transactions")
    tracker.item_returned(ItemDelta("transactions", "A", 160, "late"))  # moves nothing
    tracker.subscribed("transactions", ("B",))
    stream = tracker.cursor(INFO).streams["transactions"]
    assert stream.addresses == ("B",) and stream.boundary_slot == -1
    assert stream.boundary_keys == frozenset()


def test_a_cursor_survives_json_and_a_resumed_tracker_carries_it_on() -> None:
    tracker = CursorTracker("ws://h/backtest", CREATE)
    tracker.subscribed("transactions", ("A",))
    tracker.returned(Transaction(slot=120, signature="s9"),
                     ItemDelta("transactions", "A", 120, "s9"))
    tracker.returned(Slot(120), SeqDelta(8))
    tracker.continue_sent(ContinueParams(advance_count=2))
    cursor = tracker.cursor(INFO)
    again = Cursor.from_json(cursor.to_json())
    assert again == cursor
    resumed = CursorTracker(again.url, again.create, again)
    assert resumed.cursor(INFO) == cursor


@pytest.mark.parametrize(("text", "field"), [
    ("[]", "cursor"),
    ('{"format": "something else"}', "format"),
])
def test_a_document_that_is_not_a_cursor_names_the_field(text: str, field: str) -> None:
    with pytest.raises(CursorError) as caught:
        Cursor.from_json(text)
    assert caught.value.field.startswith(field) or field in str(caught.value)


def test_check_cursor_rejects_anything_else_by_type() -> None:
    with pytest.raises(TypeError, match="cursor: expected Cursor, got dict"):
        check_cursor({})


@given(st.lists(st.tuples(st.sampled_from(["transactions", "account_diffs", "gone"]),
                          st.integers(100, 104), st.integers(0, 9)), max_size=60),
       st.integers(1, 8))
def test_items_settled_in_bulk_give_the_cursor_of_items_applied_one_by_one(
        items: list[tuple[str, int, int]], every: int) -> None:
    """Streams interleaved, late items, an unsubscribed stream: settling a run of
    items at once (locals kept per stream) ends where applying each alone ends."""
    bulk, single = (CursorTracker("ws://h/backtest", CREATE) for _ in range(2))
    for tracker in (bulk, single):
        for name in ("transactions", "account_diffs", "gone"):
            tracker.subscribed(name, ("A",))
        tracker.unsubscribed("gone")
    for n, (name, slot, key) in enumerate(items):
        delta = ItemDelta(name, "A", slot, f"k{key}")
        bulk.item_returned(delta)
        if n % every == 0:
            bulk.settle_items()
        single.apply(delta)
        single.settle_items()
    assert bulk.cursor(INFO) == single.cursor(INFO)
    expected = {}
    for name, slot, key in items:  # the model: the newest slot and its keys
        if name != "gone":
            top, keys = expected.get(name, (-1, set()))
            if slot > top:
                expected[name] = (slot, {f"k{key}"})
            elif slot == top:
                keys.add(f"k{key}")
    streams = bulk.cursor(INFO).streams
    assert {name: (s.boundary_slot, set(s.boundary_keys)) for name, s in streams.items()
            if s.boundary_slot >= 0} == expected
