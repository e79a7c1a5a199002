"""Outbox: what the application gets, once, in order, within bounded memory.

A plain class (no threads, no sockets) owned by the supervisor, in the style of
h11's connection object: the supervisor feeds it what the links reported and
asks it what to hand out; every decision about *which* events reach the
application lives here and is unit-tested without an actor.

* **Exactly once.** Control events are deduplicated by ``seqId`` (an attach
  replays after the last one seen); subscription items by key (transaction
  signature; diff (signature, account)) across the replayed boundary. A key that
  comes again is counted as what it is: a *replay* (the same item for the same
  address, after a reconnect) or an *address repeat* (the server notifies a
  transaction once per matching subscribed address). Keys are
  remembered for the server's replay buffer (:data:`PUBSUB_BUFFER_SLOTS`) past the
  newest slot: a replay never reaches further back, so older keys never return.
* **Order.** Events leave in the order they were put; the subscription link
  sorts a resume's replay by slot before it reaches here.
* **Credits.** Each link's reader may hold ``window`` undelivered frames; a
  credit goes back when its event leaves the client (taken, told to the
  listener, or dropped as a duplicate). Grants are batched: one per ``window/8``.
* **Cursor deltas.** Each queued event carries what delivering it moves in the
  application's cursor (:mod:`actors.decisions.cursor`): a control event its ``seqId``, an
  item its stream, address, slot and key. A take hands them over with the batch
  (:class:`Batch`); a listener's cursor moves as each event is told. An attach
  seeds the dedup from a cursor (:meth:`Outbox.seed`).
* **Takes.** The blocking facade waits on a future (:class:`Taker`); a take is
  answered with a batch, withdrawn on timeout or interrupt, or failed with the
  session's error once every event queued before the failure was handed out.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from protocol.pubsub import PUBSUB_BUFFER_SLOTS

from ..events import (
    ManagedEvent,
    ManagedSessionError,
    SessionFailed,
    StreamEvent,
    Transaction,
)
from .cursor import Cursor, CursorTracker, Delta, ItemDelta, SeqDelta, item_key

PRUNE_EVERY_SLOTS = 16  # dedup keys are pruned in steps, not on every batch
# An ItemDelta built by tuple's own constructor: a named tuple's ``__new__`` is a Python
# function (a frame per item), and one delta is made per notification.
new_delta = tuple.__new__


class Reply(Protocol):
    """The future a take is answered through (a ``pykka.Future``)."""

    def set(self, value: Any = None) -> None: ...

    def set_exception(self, exc_info: Any = None) -> None: ...


def fail_reply(reply: Reply, error: BaseException) -> None:
    """Fail a future that may already be answered (a withdrawn take): never raises."""
    try:
        reply.set_exception((type(error), error, None))
    except Exception:  # noqa: BLE001 - already completed
        pass


class Batch(list[ManagedEvent]):
    """A take's answer: the events, and in :attr:`deltas` the cursor delta of each."""

    deltas: list[Delta | None]


SEEDED = -1  # the "came for" of a key seeded from a cursor: every address


class _Stream:
    __slots__ = ("addresses", "indexes", "last_slot", "seen", "by_slot", "max_slot",
                 "pruned_below", "resumed")

    def __init__(self, addresses: tuple[str, ...]) -> None:
        self.resumed = False  # seeded from a cursor: the first subscribe replays
        self.addresses = addresses
        self.indexes = {a: i for i, a in enumerate(addresses)}
        self.last_slot: dict[str, int] = {}  # per address: the resume cursor
        # delivered key -> the index of the address it came for, or a tuple of
        # them once it came for several. Ints and tuples of ints, not a set per
        # key: a stream remembers up to 100 slots of keys (tens of thousands on
        # a dense stream), and containers the garbage collector tracks made its
        # full collections cost a third of the client's time. (Not a bit mask:
        # with thousands of addresses subscribed, one key's mask took kilobytes.)
        self.seen: dict[Any, int | tuple[int, ...]] = {}
        # slot -> the keys first delivered at it: pruning drops whole slots,
        # never walks the keys it keeps.
        self.by_slot: dict[int, list[Any]] = {}
        self.max_slot = -1
        self.pruned_below = -1

    def index(self, address: str) -> int:
        index = self.indexes.get(address)
        if index is None:  # not subscribed on this stream: still told apart
            index = self.indexes[address] = len(self.indexes)
        return index

    def prune(self, horizon: int) -> None:
        """Forget the keys of slots below ``horizon``: no replay reaches them."""
        for slot in [s for s in self.by_slot if s < horizon]:
            for key in self.by_slot.pop(slot):
                self.seen.pop(key, None)
        self.pruned_below = horizon


class _FailureMarker:
    """Sits last in the queue: the application gets every earlier event first."""

    __slots__ = ("error",)

    def __init__(self, error: ManagedSessionError) -> None:
        self.error = error


# Tells the listener actor a message; False once that actor is gone (None counts as told).
Listener = Callable[[Any], bool | None]


class Outbox:
    """Dedup, order, credits and takes for one session.

    ``listener`` (optional: the supervisor's wrapper of the listener actor's
    ``tell``) gets every event at once instead of queueing it; it returns False
    once the actor is gone, and :attr:`listener_lost` then says so.
    """

    def __init__(self, *, window: int, log: logging.LoggerAdapter[logging.Logger],
                 listener: Listener | None = None) -> None:
        self._window = window
        self._log = log
        self._listener = listener
        self._queue: deque[tuple[str | None, ManagedEvent | _FailureMarker, Delta | None]] = (
            deque())
        self._seq_of: dict[int, int] = {}  # id(event) -> seqId, within one fresh_control
        self._seeds: dict[str, Any] = {}  # stream -> StreamCursor, from attach
        # Listener sessions: the cursor moves as each event is told.
        self.tracker: CursorTracker | None = None
        self._held: dict[str, int] = {}
        self._takers: deque[tuple[Reply, int]] = deque()
        self._ungranted: dict[str, int] = {}
        self._grants: dict[str, int] = {}
        self._streams: dict[str, _Stream] = {}
        self._last_seq: int | None = None
        self._failure: ManagedSessionError | None = None
        self.listener_lost = False
        # duplicates_dropped = replays_dropped + address_repeats_dropped (kept for old users)
        self.stats = {"duplicates_dropped": 0, "replays_dropped": 0,
                      "address_repeats_dropped": 0, "stale_seq_dropped": 0,
                      "events_delivered": 0, "peak_held": 0}

    # --- what the links reported ------

    @property
    def has_listener(self) -> bool:
        return self._listener is not None

    @property
    def last_seq(self) -> int | None:
        """The last control ``seqId`` seen: where an attach resumes."""
        return self._last_seq

    def fresh_control(self, items: Iterable[tuple[int | None, Any]]) -> tuple[list[Any], int]:
        """Control responses not seen before, and how many were dropped as replays.

        A ``seqId`` at or below the last one is a replay after an attach. One
        *below* it cannot come from a faithful replay: it is dropped all the same
        (delivering it would reorder the stream) but logged, since it means the
        server or a proxy reordered frames.
        """
        fresh: list[Any] = []
        dropped = 0
        self._seq_of.clear()
        for seq, msg in items:
            if seq is not None and self._last_seq is not None and seq <= self._last_seq:
                dropped += 1
                self.stats["duplicates_dropped"] += 1
                self.stats["replays_dropped"] += 1
                if seq < self._last_seq:
                    self.stats["stale_seq_dropped"] += 1
                    self._log.warning("control seqId %d after %d: out of order, dropped",
                                      seq, self._last_seq)
                continue
            if seq is not None:
                self._last_seq = seq
                if msg is not None:
                    self._seq_of[id(msg)] = seq  # the delta its delivery carries
            fresh.append(msg)
        return fresh, dropped

    def seed(self, cursor: Cursor) -> None:
        """Attach from ``cursor``: nothing it says was delivered is delivered again."""
        self._last_seq = cursor.last_seq
        self._seeds = dict(cursor.streams)

    def add_stream(self, name: str, addresses: tuple[str, ...]) -> None:
        stream = self._streams[name] = _Stream(addresses)
        if self.tracker is not None:
            self.tracker.subscribed(name, addresses)
        seed = self._seeds.pop(name, None)
        if seed is not None:
            stream.resumed = True
            stream.last_slot = {a: s for a, s in seed.replay_slots.items() if a in addresses}
            stream.seen = dict.fromkeys(seed.boundary_keys, SEEDED)
            stream.by_slot = {seed.boundary_slot: list(seed.boundary_keys)}
            stream.max_slot = seed.boundary_slot

    def remove_stream(self, name: str) -> None:
        """Unsubscribed: later items of ``name`` are not queued (those queued stay)."""
        self._streams.pop(name, None)
        if self.tracker is not None:
            self.tracker.unsubscribed(name)

    def resumed(self, name: str) -> bool:
        """The stream was seeded from a cursor: its first subscribe replays too."""
        return self._streams[name].resumed

    def has_stream(self, name: str) -> bool:
        return name in self._streams

    def addresses(self, name: str) -> tuple[str, ...]:
        return self._streams[name].addresses

    def replay_cursor(self, name: str, address: str) -> int | None:
        """The last slot delivered for ``address`` (inclusive resume point), if any."""
        return self._streams[name].last_slot.get(address)

    def delivered_through(self, name: str) -> int:
        """The newest slot with an item delivered on this stream (-1: none yet)."""
        return self._streams[name].max_slot

    def stream_items(self, name: str, items: Iterable[tuple[str, StreamEvent]],
                     current: bool) -> None:
        """Queue each item not delivered before; ``current``: from the live connection."""
        stream = self._streams[name]
        seen_keys, last_slot, indexes = stream.seen, stream.last_slot, stream.indexes
        by_slot = stream.by_slot
        # The hot path (every notification): an item nobody waits for goes
        # straight to the queue; held and peak are counted once per batch.
        queue = self._queue
        queued_before = len(queue)
        to_queue = self._listener is None
        dropped = replays = 0
        # The slot being filled and its key list, the newest slot: kept in locals
        # (items come in slot order, so a slot's list is looked up once, not per item).
        keys_slot, max_slot = -1, stream.max_slot
        keys: list[Any] = []  # slots are >= 0: replaced at the first item
        for address, event in items:
            slot = event.slot
            if slot > last_slot.get(address, -1):
                last_slot[address] = slot
            # item_key, inlined: a call per notification cost more than the test
            key = event.signature if type(event) is Transaction else item_key(event)
            index = indexes.get(address)
            if index is None:
                index = stream.index(address)
            came_for = seen_keys.get(key)
            if came_for is not None:
                dropped += 1
                if isinstance(came_for, int):
                    if came_for == index or came_for == SEEDED:
                        replays += 1  # the same item for the same address again: a replay
                    else:  # notified once per matching address
                        seen_keys[key] = (came_for, index)
                elif index in came_for:
                    replays += 1
                else:
                    seen_keys[key] = (*came_for, index)
                continue
            seen_keys[key] = index
            if slot != keys_slot:
                keys_slot = slot
                keys = by_slot.setdefault(slot, [])  # once per slot of a batch
                if slot > max_slot:
                    max_slot = slot
            keys.append(key)
            delta = new_delta(ItemDelta, (name, address, slot, key))
            if to_queue:
                queue.append((name, event, delta))
            else:
                self.put(name, event, delta)
        stream.max_slot = max_slot
        queued = len(queue) - queued_before if to_queue else 0
        if queued:
            self._held[name] = self._held.get(name, 0) + queued
            self.stats["peak_held"] = max(self.stats["peak_held"], len(queue))
            # A waiting take gets the whole batch in one answer (up to its limit),
            # not its first item: one hand-off per batch, not two.
            while self._takers and self._queue:
                reply, limit = self._takers.popleft()
                self.take(reply, limit, None)
        self.stats["duplicates_dropped"] += dropped
        self.stats["replays_dropped"] += replays
        self.stats["address_repeats_dropped"] += dropped - replays
        horizon = stream.max_slot - PUBSUB_BUFFER_SLOTS - 1
        if horizon >= stream.pruned_below + PRUNE_EVERY_SLOTS:
            stream.prune(horizon)
        if current:
            self.consumed(name, dropped)

    # --- the queue ------

    def notify(self, message: Any) -> bool:
        """Tell the listener ``message``; False when there is none, or it is gone."""
        if self._listener is None or self.listener_lost:
            return False
        if self._listener(message) is not False:
            return True
        self._log.warning("the listener actor is gone")
        self.listener_lost = True
        return False

    def put(self, source: str | None, event: ManagedEvent, delta: Delta | None = None
            ) -> None:
        """Hand ``event`` to the listener or the first waiting take, or queue it.

        ``delta``: what delivering it moves in the application's cursor (a control
        event's comes from :meth:`fresh_control`)."""
        if delta is None and source is not None and id(event) in self._seq_of:
            delta = SeqDelta(self._seq_of.pop(id(event)))
        if self._listener is not None:
            if self.notify(event) and self.tracker is not None:
                self.tracker.returned(event, delta)
            self._delivered(source, 1)
            return
        if self._takers and not self._queue:
            reply, _ = self._takers.popleft()
            batch = Batch([event])
            batch.deltas = [delta]
            reply.set(batch)
            self._delivered(source, 1)
            return
        self._queue.append((source, event, delta))
        if source is not None:
            self._held[source] = self._held.get(source, 0) + 1
        self.stats["peak_held"] = max(self.stats["peak_held"], len(self._queue))

    def fail(self, error: ManagedSessionError) -> None:
        """Every later take fails with ``error``, after the events queued before it."""
        if self._failure is not None:
            return
        self._failure = error
        if self._listener is not None:
            self.notify(SessionFailed(error))
            return
        self._queue.append((None, _FailureMarker(error), None))
        while self._takers and isinstance(self._queue[0][1], _FailureMarker):
            fail_reply(self._takers.popleft()[0], error)

    def take(self, reply: Reply, limit: int, closed: ManagedSessionError | None) -> None:
        """Answer ``reply`` with up to ``limit`` events, or wait for one.

        ``closed``: the session is over and nothing more will come; an empty
        queue then fails the take at once instead of leaving it waiting.
        """
        if not self._queue:
            if closed is not None:
                fail_reply(reply, closed)
            else:
                self._takers.append((reply, limit))
            return
        head = self._queue[0][1]
        if isinstance(head, _FailureMarker):
            fail_reply(reply, head.error)
            return
        batch = Batch()
        deltas: list[Delta | None] = []
        batch.deltas = deltas
        returned: dict[str, int] = {}
        queue = self._queue
        popleft, add_event, add_delta = queue.popleft, batch.append, deltas.append
        for _ in range(min(limit, len(queue))):
            source, event, delta = entry = popleft()
            if isinstance(event, _FailureMarker):
                queue.appendleft(entry)
                break  # the next take gets the error, after these events
            add_event(event)
            add_delta(delta)
            if source is not None:
                returned[source] = returned.get(source, 0) + 1
        for source, count in returned.items():
            self._held[source] -= count
        reply.set(batch)
        self.stats["events_delivered"] += len(batch)
        for source, count in returned.items():
            self.consumed(source, count)

    def cancel_take(self, reply: Reply) -> bool:
        """Withdraw a waiting take; False if events were already put in it."""
        for taker in self._takers:
            if taker[0] is reply:
                self._takers.remove(taker)
                return True
        return False

    def close_takers(self, error: ManagedSessionError) -> None:
        """Fail every waiting take: nothing more will come."""
        while self._takers:
            fail_reply(self._takers.popleft()[0], error)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def held(self, source: str) -> int:
        return self._held.get(source, 0)

    # --- credits ------

    def reset_link(self, name: str) -> int:
        """A new connection for ``name``: its window less what it still has queued here."""
        self._ungranted[name] = 0
        return max(1, self._window - self._held.get(name, 0))

    def consumed(self, name: str, credits: int) -> None:
        """``credits`` frames of ``name`` left the client: give them back in batches."""
        if credits <= 0:
            return
        owed = self._ungranted.get(name, 0) + credits
        if owed >= max(1, self._window // 8) or self._held.get(name, 0) == 0:
            self._grants[name] = self._grants.get(name, 0) + owed
            owed = 0
        self._ungranted[name] = owed

    def take_grants(self) -> list[tuple[str, int]]:
        """Grants due since the last call, for the supervisor to tell its links."""
        grants = list(self._grants.items())
        self._grants.clear()
        return grants

    def _delivered(self, source: str | None, count: int) -> None:
        self.stats["events_delivered"] += count
        if source is not None:
            self.consumed(source, count)
