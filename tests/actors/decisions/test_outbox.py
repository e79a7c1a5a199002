"""Outbox as a plain class: dedup, order, credits and takes, with no actor or socket."""

from __future__ import annotations

import logging
import sys

import pykka
import pytest

from actors.decisions.outbox import Outbox
from actors.events import (
    AccountDiff,
    ManagedEvent,
    ManagedSessionError,
    SessionFailed,
    Slot,
    Transaction,
)

LOG = logging.LoggerAdapter(logging.getLogger("test.outbox"), {})


def tx(slot: int, sig: str) -> Transaction:
    return Transaction(slot, sig)


def take(outbox: Outbox, limit: int = 100) -> list[ManagedEvent]:
    reply: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
    outbox.take(reply, limit, None)
    return reply.get(timeout=0)


def test_replayed_items_are_delivered_once_in_order() -> None:
    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("transactions", ("a", "b"))
    outbox.stream_items("transactions", [("a", tx(1, "s1")), ("b", tx(2, "s2"))], True)
    # A resume replays the boundary slot, and one item matched two addresses.
    outbox.stream_items("transactions", [("a", tx(2, "s2")), ("b", tx(2, "s2")),
                                         ("a", tx(3, "s3"))], True)
    assert take(outbox) == [tx(1, "s1"), tx(2, "s2"), tx(3, "s3")]
    assert outbox.stats["duplicates_dropped"] == 2
    assert outbox.replay_cursor("transactions", "a") == 3
    assert outbox.replay_cursor("transactions", "b") == 2
    assert outbox.delivered_through("transactions") == 3


def test_diffs_are_keyed_by_signature_and_account() -> None:
    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("account_diffs", ("x", "y"))
    items = [("x", AccountDiff(5, "x", "s")), ("y", AccountDiff(5, "y", "s")),
             ("x", AccountDiff(5, "x", "s"))]
    outbox.stream_items("account_diffs", items, True)
    assert len(take(outbox)) == 2


def test_control_replays_are_dropped_and_a_backwards_seq_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(window=64, log=LOG)
    fresh, dropped = outbox.fresh_control([(1, Slot(1)), (2, Slot(2))])
    assert (fresh, dropped) == ([Slot(1), Slot(2)], 0)
    with caplog.at_level(logging.WARNING):
        fresh, dropped = outbox.fresh_control([(2, Slot(2)), (1, Slot(1)), (3, Slot(3))])
    assert (fresh, dropped) == ([Slot(3)], 2)
    assert outbox.stats["stale_seq_dropped"] == 1
    assert any("out of order" in r.getMessage() for r in caplog.records)


def test_credits_come_back_in_batches_and_on_an_empty_queue() -> None:
    outbox = Outbox(window=80, log=LOG)  # a grant per 10 credits
    outbox.add_stream("transactions", ("a",))
    outbox.stream_items("transactions", [("a", tx(i, f"s{i}")) for i in range(30)], True)
    assert take(outbox, limit=5) and outbox.take_grants() == []
    take(outbox, limit=5)
    assert outbox.take_grants() == [("transactions", 10)]
    take(outbox)  # the rest: queue empty, everything owed goes back
    assert outbox.take_grants() == [("transactions", 20)]
    assert outbox.reset_link("transactions") == 80


def test_a_failure_comes_after_every_queued_event_and_then_every_time() -> None:
    outbox = Outbox(window=64, log=LOG)
    outbox.put(None, Slot(1))
    outbox.put(None, Slot(2))
    error = ManagedSessionError("internal", "boom")
    outbox.fail(error)
    assert take(outbox, limit=1) == [Slot(1)]
    assert take(outbox) == [Slot(2)]
    for _ in range(2):
        with pytest.raises(ManagedSessionError, match="boom"):
            take(outbox)


def test_a_waiting_take_is_answered_withdrawn_or_closed() -> None:
    outbox = Outbox(window=64, log=LOG)
    waiting: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
    outbox.take(waiting, 10, None)
    outbox.put(None, Slot(7))
    assert waiting.get(timeout=0) == [Slot(7)]
    assert not outbox.cancel_take(waiting)  # answered already: the events are the caller's
    withdrawn: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
    outbox.take(withdrawn, 10, None)
    assert outbox.cancel_take(withdrawn)
    outbox.put(None, Slot(8))  # not lost in the withdrawn take
    assert take(outbox) == [Slot(8)]
    closed: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
    outbox.take(closed, 10, ManagedSessionError("closed", "over"))
    with pytest.raises(ManagedSessionError, match="closed"):
        closed.get(timeout=0)


def test_listener_mode_tells_at_once_then_the_failure_last() -> None:
    told: list[object] = []
    outbox = Outbox(window=64, log=LOG, listener=told.append)
    outbox.put(None, Slot(1))
    error = ManagedSessionError("closed", "over")
    outbox.fail(error)
    assert told == [Slot(1), SessionFailed(error)] and not outbox.listener_lost


def test_a_listener_that_is_gone_is_noticed_and_not_told_again() -> None:
    told: list[object] = []

    def listener(event: object) -> bool:
        if told:
            return False  # what the supervisor's wrapper says once the actor is gone
        told.append(event)
        return True

    outbox = Outbox(window=64, log=LOG, listener=listener)
    outbox.put(None, Slot(1))
    outbox.put(None, Slot(2))
    assert outbox.listener_lost
    assert not outbox.notify(Slot(3))
    assert told == [Slot(1)]


def test_each_taken_event_carries_its_cursor_delta() -> None:
    """The facade moves the cursor by what it returns: each event's delta comes with it."""
    from actors.decisions.cursor import ItemDelta, SeqDelta

    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("transactions", ("a",))
    fresh, _ = outbox.fresh_control([(4, Slot(9)), (5, None)])
    for event in fresh:
        if event is not None:
            outbox.put("control", event)
    outbox.stream_items("transactions", [("a", tx(9, "s9"))], True)
    batch = take(outbox)
    assert batch == [Slot(9), tx(9, "s9")]
    assert batch.deltas == [SeqDelta(4), ItemDelta("transactions", "a", 9, "s9")]  # type: ignore[attr-defined]


def test_a_seeded_outbox_drops_what_the_cursor_says_was_delivered() -> None:
    from actors.decisions.cursor import Cursor, StreamCursor

    outbox = Outbox(window=64, log=LOG)
    outbox.seed(Cursor("ws://h/backtest", "s", "http://h", 1, 20, last_seq=7,
                       streams={"transactions": StreamCursor(("a",), {"a": 5}, 5,
                                                             frozenset({"s5"}))}))
    outbox.add_stream("transactions", ("a",))
    assert outbox.resumed("transactions") and outbox.replay_cursor("transactions", "a") == 5
    fresh, dropped = outbox.fresh_control([(7, Slot(5)), (8, Slot(6))])
    assert fresh == [Slot(6)] and dropped == 1
    outbox.stream_items("transactions", [("a", tx(5, "s5")), ("a", tx(5, "s5b")),
                                         ("a", tx(6, "s6"))], True)
    assert take(outbox) == [tx(5, "s5b"), tx(6, "s6")]


def test_keys_are_remembered_for_the_replay_buffer_and_then_forgotten() -> None:
    """Within the server's 100-slot replay buffer a key comes back as a replay and
    is dropped; far older ones are forgotten (no replay reaches them), so the
    dedup memory stays bounded however long the session runs."""
    from protocol.pubsub import PUBSUB_BUFFER_SLOTS

    outbox = Outbox(window=10**6, log=LOG)
    outbox.add_stream("transactions", ("a", "b"))
    last = 400
    for slot in range(1, last + 1):
        outbox.stream_items("transactions", [("a", tx(slot, f"s{slot}")),
                                             ("b", tx(slot, f"s{slot}"))], True)
    assert len(take(outbox, 10**6)) == last
    assert outbox.stats["address_repeats_dropped"] == last
    recent = last - PUBSUB_BUFFER_SLOTS  # inside the buffer: still remembered
    outbox.stream_items("transactions", [("a", tx(recent, f"s{recent}"))], True)
    assert take_none(outbox)
    assert outbox.stats["replays_dropped"] == 1
    old = 100  # 300 slots back: forgotten, so a (hypothetical) replay is new again
    outbox.stream_items("transactions", [("a", tx(old, f"s{old}"))], True)
    assert take(outbox) == [tx(old, f"s{old}")]


def take_none(outbox: Outbox) -> bool:
    return outbox.queued == 0


def test_a_waiting_take_gets_the_whole_batch_in_one_answer() -> None:
    """A consumer that waits gets a stream batch in one hand-off, up to its limit,
    not its first item and then a second round trip for the rest."""
    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("transactions", ("a",))
    reply: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
    outbox.take(reply, 2, None)  # nothing queued: the take waits
    outbox.stream_items("transactions", [("a", tx(1, "s1")), ("a", tx(1, "s2")),
                                         ("a", tx(2, "s3"))], True)
    assert reply.get(timeout=0) == [tx(1, "s1"), tx(1, "s2")]
    assert take(outbox) == [tx(2, "s3")]
    assert outbox.stats["events_delivered"] == 3


def test_dedup_memory_per_key_does_not_grow_with_the_number_of_subscribed_addresses(
        ) -> None:
    """A transaction notified for two subscribed addresses is remembered with a bit
    mask of both; the bit of address i is ``1 << i``, so with 20,000 addresses
    subscribed (the matcher's own docstring: "a user may subscribe thousands")
    a key that came for two late-listed addresses holds a 20,000-bit int,
    about 2.7 KB, for 100 slots: on a dense stream (~2,700 keys a slot) that is
    hundreds of MB, ~12x the set of two addresses it replaced. The dedup memory
    of a key should not scale with the subscription list's length."""
    log = logging.LoggerAdapter(logging.getLogger("test.outbox.memory"), {})
    addresses = tuple(f"addr{i}" for i in range(20_000))
    outbox = Outbox(window=10**9, log=log)
    outbox.add_stream("transactions", addresses)
    for n in range(2_000):
        tx = Transaction(n // 100, f"sig{n}", None, None, 0, ())
        outbox.stream_items("transactions", [(addresses[-1], tx), (addresses[-2], tx)], True)
    seen = outbox._streams["transactions"].seen  # noqa: SLF001 - the memory under test
    per_key = sum(sys.getsizeof(v) for v in seen.values()) / len(seen)
    assert per_key < 512, f"{per_key:.0f} bytes per remembered key"


def test_outbox_tells_a_replay_from_an_address_repeat() -> None:
    from actors.decisions.outbox import Outbox

    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("transactions", ("a", "b"))
    outbox.stream_items("transactions", [("a", tx(1, "s1")), ("b", tx(1, "s1"))], True)
    assert outbox.stats["address_repeats_dropped"] == 1 and outbox.stats["replays_dropped"] == 0
    # A resume replays slot 1 for both addresses: replays, however many addresses.
    outbox.stream_items("transactions", [("b", tx(1, "s1")), ("a", tx(1, "s1")),
                                         ("a", tx(2, "s2"))], True)
    assert take(outbox) == [tx(1, "s1"), tx(2, "s2")]
    assert outbox.stats["replays_dropped"] == 2
    assert outbox.stats["address_repeats_dropped"] == 1
    assert outbox.stats["duplicates_dropped"] == 3
