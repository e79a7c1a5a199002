"""Cursor: everything needed to resume a session from outside the process (actors/DESIGN.md §7).

A session lives on the server for ``disconnectTimeoutSecs`` after its control
connection drops, replays control responses after a ``seqId`` and PubSub items
from a slot. A :class:`Cursor` names that point *as the application saw it*:

* the control URL (never the key), the session id, its rpc endpoint and range;
* ``last_seq``: the ``seqId`` of the last control event *returned to the
  application* (an attach replays everything after it);
* per stream, the subscribed addresses and per address the replay slot. A
  stream delivers in slot order (one connection writes in execution order, a
  resume's replay is sorted), so every slot before the newest delivered one is
  complete for every address: each address replays from that newest slot
  (inclusive: it may be partial). ``boundary_keys`` are the keys already
  delivered at that slot, so its replay does not deliver them twice;
* the continue state: idle, or a continue the application sent and that was not
  answered yet, with ``write_seq`` (the last ``seqId`` delivered when it was
  sent). After an attach the :class:`~actors.decisions.pacer.ContinuePacer` treats it as
  written at ``write_seq`` on an older connection, so the lost-continue rule
  applies: answered in the replay, or judged lost after the quiet window.

**"A cursor taken after event E resumes right after E."** The supervisor's own
view runs ahead of the application (events queued, a batch taken by the facade
but not yet returned), so the cursor is not read from the supervisor: the
outbox tags each event with the :data:`Delta` it carries and the
:class:`CursorTracker` of whoever hands events to the application (the blocking
facade, as each event is *returned*; the outbox for a listener, as each event
is *told*) applies it.

Limits: a continue split into chunks (``advance_count`` above
``max_run_ahead``) that is interrupted by a crash resumes as the chunk the
server was running: the application may see ``ReadyForContinue`` before the
full count. Replay reaches back only as far as the server's 100-slot buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import attrs

from protocol import ContinueParams, ContinueToParams, CreateSession
from protocol.codec import dump_document, load_document, request_document, request_from_document

from ..events import (
    Completed,
    ContinueLost,
    Error,
    ManagedEvent,
    Paused,
    ReadyForContinue,
    SessionInfo,
    StreamEvent,
    Transaction,
)
from .stepping import DiscoveryTracker

CURSOR_FORMAT = "backtest-actors-cursor"
CURSOR_VERSION = 1
StreamName = Literal["transactions", "account_diffs", "actions"]
STREAMS: tuple[StreamName, ...] = ("transactions", "account_diffs", "actions")
ItemKey = str | tuple[str, str]  # a transaction's signature; a diff's (signature, account)


class CursorError(ValueError):
    """A cursor document that is corrupt or not a cursor; ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"cursor: {field}: {problem}")


# --- what each delivered event moves ---------------------------------------------------


@attrs.frozen
class SeqDelta:
    """A control event with this ``seqId`` reached the application."""

    seq: int


class ItemDelta(NamedTuple):
    """A subscription item matched on ``address`` at ``slot`` reached the application.

    A named tuple, not an attrs class: one is made per item on the hot path, and
    a tuple of strings and ints is cheap to build and left alone by the
    garbage collector.
    """

    stream: str
    address: str
    slot: int
    key: ItemKey


Delta = SeqDelta | ItemDelta


def item_key(event: StreamEvent) -> ItemKey:
    return event.signature if isinstance(event, Transaction) else event.key


# --- the cursor -------------------------------------------------------------------------


@attrs.frozen
class StreamCursor:
    addresses: tuple[str, ...]
    replay_slots: dict[str, int]  # per address: replayFromSlot (inclusive)
    boundary_slot: int  # the newest slot delivered on this stream, -1 if none
    boundary_keys: frozenset[ItemKey] = frozenset()


@attrs.frozen
class PendingContinue:
    """A continue the application sent that no delivered event answered yet."""

    params: ContinueParams | ContinueToParams
    write_seq: int | None


@attrs.frozen
class Cursor:
    """Where to resume a session; see the module docstring. JSON: :meth:`to_json`."""

    url: str
    session_id: str
    rpc_endpoint: str
    start_slot: int
    end_slot: int
    last_seq: int | None = None
    streams: dict[str, StreamCursor] = attrs.field(factory=dict)
    pending_continue: PendingContinue | None = None
    # Where the session rests as the application saw it (a continue-to's target is
    # checked against it): the newest slot reported, and a continue-to pause.
    last_slot: int = -1
    paused_at: tuple[int, int | None] | None = None
    # Discoveries announced and not passed, and whether the session rests: an attach
    # steps on from where the application was (advance_to_discovery).
    ahead: tuple[tuple[int, int], ...] = ()
    at_rest: bool = False

    @property
    def create(self) -> CreateSession:
        """The session's range as a ``CreateSession`` (what a resume runs to)."""
        return CreateSession(self.start_slot, self.end_slot)

    @property
    def info(self) -> SessionInfo:
        """The session's identity as a ``SessionInfo``."""
        return SessionInfo(self.session_id, self.rpc_endpoint)

    def to_json(self) -> str:
        """The cursor as a JSON document (never the key): persist it, resume with
        :meth:`from_json` and ``ManagedBacktestSession.attach``."""
        streams = {
            name: {"addresses": list(s.addresses), "replaySlots": dict(s.replay_slots),
                   "boundarySlot": s.boundary_slot,
                   "boundaryKeys": sorted((list(k) if isinstance(k, tuple) else k
                                           for k in s.boundary_keys), key=str)}
            for name, s in self.streams.items()}
        pending = None
        if self.pending_continue is not None:
            pending = {"params": request_document(self.pending_continue.params),
                       "writeSeq": self.pending_continue.write_seq}
        return dump_document({
            "format": CURSOR_FORMAT, "version": CURSOR_VERSION, "url": self.url,
            "sessionId": self.session_id, "rpcEndpoint": self.rpc_endpoint,
            "startSlot": self.start_slot, "endSlot": self.end_slot,
            "lastSeq": self.last_seq, "streams": streams, "continue": pending,
            "lastSlot": self.last_slot,
            "pausedAt": None if self.paused_at is None else list(self.paused_at),
            "ahead": [list(point) for point in self.ahead], "atRest": self.at_rest})

    @classmethod
    def from_json(cls, text: str | bytes) -> Cursor:
        """Parse :meth:`to_json`'s output; :class:`CursorError` names the bad field."""
        try:
            doc = load_document(text)
        except ValueError as exc:
            raise CursorError("document", str(exc)) from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> Cursor:
        """The cursor of a parsed JSON document; :class:`CursorError` names the bad field."""
        if not isinstance(doc, dict) or doc.get("format") != CURSOR_FORMAT:
            raise CursorError("format", f"expected {CURSOR_FORMAT!r}: not a cursor")
        if doc.get("version") != CURSOR_VERSION:
            raise CursorError("version", f"expected {CURSOR_VERSION}, got "
                              f"{doc.get('version')!r}")
        streams: dict[str, StreamCursor] = {}
        raw_streams = _get(doc, "streams", dict)
        for name, raw in raw_streams.items():
            path = f"streams.{name}"
            if name not in STREAMS:
                raise CursorError(path, f"unknown stream (expected one of {STREAMS})")
            if not isinstance(raw, dict):
                raise CursorError(path, "expected an object")
            addresses = _get(raw, "addresses", list, path)
            if not addresses or not all(isinstance(a, str) for a in addresses):
                raise CursorError(f"{path}.addresses", "expected a non-empty list of strings")
            replay = _get(raw, "replaySlots", dict, path)
            if set(replay) != set(addresses) or not all(_is_int(v) for v in replay.values()):
                raise CursorError(f"{path}.replaySlots",
                                  "expected a slot for each subscribed address")
            keys: set[ItemKey] = set()
            for key in _get(raw, "boundaryKeys", list, path):
                if name in ("transactions", "actions") and isinstance(key, str):
                    keys.add(key)
                elif (name == "account_diffs" and isinstance(key, list) and len(key) == 2
                      and all(isinstance(k, str) for k in key)):
                    keys.add((key[0], key[1]))
                else:
                    raise CursorError(f"{path}.boundaryKeys", f"bad key {key!r}")
            streams[name] = StreamCursor(tuple(addresses), dict(replay),
                                         _get(raw, "boundarySlot", int, path), frozenset(keys))
        pending = None
        raw_pending = doc.get("continue")
        if raw_pending is not None:
            if not isinstance(raw_pending, dict):
                raise CursorError("continue", "expected an object or null")
            try:
                params = request_from_document(raw_pending.get("params"))
            except Exception as exc:  # noqa: BLE001 - ProtocolError or a validator's
                raise CursorError("continue.params", str(exc)) from None
            if not isinstance(params, ContinueParams | ContinueToParams):
                raise CursorError("continue.params", "not a continue request")
            pending = PendingContinue(params, _get(raw_pending, "writeSeq", int, "continue",
                                                   optional=True))
        paused_at = doc.get("pausedAt")
        if paused_at is not None and not (
                isinstance(paused_at, list) and len(paused_at) == 2 and _is_int(paused_at[0])
                and (paused_at[1] is None or _is_int(paused_at[1]))):
            raise CursorError("pausedAt", "expected [slot, batch_index] or null")
        last_slot = _get(doc, "lastSlot", int, optional=True)
        ahead = doc.get("ahead") or []
        if not isinstance(ahead, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(_is_int(v) for v in p)
                for p in ahead):
            raise CursorError("ahead", "expected a list of [slot, batch_index]")
        at_rest = doc.get("atRest", False)
        if not isinstance(at_rest, bool):
            raise CursorError("atRest", "expected true or false")
        try:
            return cls(url=_get(doc, "url", str), session_id=_get(doc, "sessionId", str),
                       rpc_endpoint=_get(doc, "rpcEndpoint", str),
                       start_slot=_get(doc, "startSlot", int),
                       end_slot=_get(doc, "endSlot", int),
                       last_seq=_get(doc, "lastSeq", int, optional=True),
                       streams=streams, pending_continue=pending,
                       last_slot=-1 if last_slot is None else last_slot,
                       paused_at=None if paused_at is None else (paused_at[0], paused_at[1]),
                       ahead=tuple((p[0], p[1]) for p in ahead), at_rest=at_rest)
        except CursorError:
            raise


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(obj: dict[str, Any], name: str, kind: type, path: str = "", *,
         optional: bool = False) -> Any:
    field = f"{path}.{name}" if path else name
    if name not in obj:
        raise CursorError(field, "missing")
    value = obj[name]
    if value is None and optional:
        return None
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise CursorError(field, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


# --- the tracker -------------------------------------------------------------------------


# Returned items noted before they are applied in bulk (bounds the list for a caller
# that never reads the cursor: a listener session, a journal being read).
SETTLE_EVERY = 256


_NO_SLOT = 2**64  # above every slot (u64): an unsubscribed stream's items move nothing


def _ignore(_: ItemKey) -> None:
    pass


class _StreamTrack:
    __slots__ = ("addresses", "slot", "keys")

    def __init__(self, addresses: tuple[str, ...], slot: int = -1,
                 keys: frozenset[ItemKey] = frozenset()) -> None:
        self.addresses = addresses
        self.slot = slot
        # A list, not a set: the outbox delivers each item once, so appending is
        # enough, and costs less per item than a set insertion (cursor() makes the set).
        self.keys: list[ItemKey] = list(keys)


class CursorTracker:
    """The cursor as the application has seen it: fed every returned event's delta.

    Plain class, not thread-safe: it lives with whoever hands events out (the
    facade's consumer thread, or the supervisor for a listener).
    """

    def __init__(self, url: str, create: CreateSession,
                 resumed: Cursor | None = None) -> None:
        self.url = url
        self.start_slot, self.end_slot = create.start_slot, create.end_slot
        self.last_seq: int | None = None
        self.pending: PendingContinue | None = None
        # Where the session rests and what it announced, as the application saw it.
        self.stepping = DiscoveryTracker()
        self._streams: dict[str, _StreamTrack] = {}
        self._removed: set[str] = set()  # unsubscribed: its late items move nothing
        # Items returned and not yet applied to their stream: an item's delta is only
        # read by cursor(), so it is noted with one C call per event (the consumer's
        # hot path) and applied in bulk when anything reads or changes the streams.
        self._items_returned: list[ItemDelta] = []
        # For a caller that settles on its own at least every SETTLE_EVERY items (the
        # blocking and asyncio front doors: once per taken batch).
        self.item_returned = self._items_returned.append
        if resumed is not None:
            self.last_seq, self.pending = resumed.last_seq, resumed.pending_continue
            self.stepping = DiscoveryTracker.resumed(resumed.last_slot, resumed.paused_at,
                                                     resumed.ahead, resumed.at_rest)
            for name, s in resumed.streams.items():
                self._streams[name] = _StreamTrack(s.addresses, s.boundary_slot,
                                                   s.boundary_keys)

    def subscribed(self, stream: str, addresses: tuple[str, ...]) -> None:
        self.settle_items()
        self._removed.discard(stream)
        if stream not in self._streams:
            self._streams[stream] = _StreamTrack(addresses)

    def unsubscribed(self, stream: str) -> None:
        """The stream was closed: a resume does not subscribe it again."""
        self.settle_items()
        self._streams.pop(stream, None)
        self._removed.add(stream)

    def continue_sent(self, params: ContinueParams | ContinueToParams) -> None:
        """Recorded before the continue is handed over (write-ahead: a crash between
        the two leaves a pending continue, which the lost-continue rule settles)."""
        self.pending = PendingContinue(params, self.last_seq)
        self.stepping.continued()

    def continue_refused(self) -> None:
        self.pending = None
        self.stepping.at_rest = True

    def returned(self, event: ManagedEvent, delta: Delta | None) -> None:
        """``event`` reached the application."""
        if type(delta) is ItemDelta:  # a subscription item (nearly every event)
            self._item(delta)
            return
        self.apply(delta)
        self.stepping.seen(event)
        if isinstance(event, ReadyForContinue | Paused | Completed | Error) or (
                isinstance(event, ContinueLost) and not event.resent):
            self.pending = None  # the continue was answered (or handed back)

    def apply(self, delta: Delta | None) -> None:
        if isinstance(delta, SeqDelta):
            self.last_seq = delta.seq
        elif isinstance(delta, ItemDelta):
            self._item(delta)

    def _item(self, delta: ItemDelta) -> None:
        items = self._items_returned
        items.append(delta)
        if len(items) >= SETTLE_EVERY:
            self.settle_items()

    def settle_items(self) -> None:
        """Apply the items returned since the last call to their streams, in order.

        Runs over every item the application takes: the stream's newest slot and
        its key list are kept in locals while the items stay on one stream (nearly
        always), and written back when the stream changes and at the end.

        The items are a snapshot, removed afterwards by count (both single C calls):
        another consumer thread's ``item_returned`` landing meanwhile is kept for the
        next call, not cleared unseen.
        """
        returned = self._items_returned
        count = len(returned)
        if not count:
            return
        items = returned[:count]
        streams, removed = self._streams, self._removed
        current: str | None = None
        stream: _StreamTrack | None = None
        slot_now = -1
        append: Callable[[ItemKey], None] = _ignore
        for stream_name, address, slot, key in items:
            if stream_name != current:
                if stream is not None:
                    stream.slot = slot_now
                current, stream = stream_name, streams.get(stream_name)
                if stream is None and stream_name not in removed:
                    stream = streams[stream_name] = _StreamTrack((address,))
                if stream is None:  # unsubscribed: its late items move nothing
                    slot_now, append = _NO_SLOT, _ignore
                else:
                    slot_now, append = stream.slot, stream.keys.append
            if slot == slot_now:
                append(key)
            elif slot > slot_now:
                assert stream is not None  # _NO_SLOT is above any slot
                slot_now, stream.keys = slot, [key]
                append = stream.keys.append
        if stream is not None:
            stream.slot = slot_now
        del returned[:count]

    def cursor(self, info: SessionInfo, pending: PendingContinue | None = None) -> Cursor:
        """The cursor now; ``pending`` overrides the tracked continue (a listener's
        comes from the pacer, which sees each answer as it is told)."""
        pending = pending or self.pending
        self.settle_items()
        streams = {}
        for name, s in self._streams.items():
            replay = s.slot if s.slot >= 0 else self.start_slot
            streams[name] = StreamCursor(s.addresses, dict.fromkeys(s.addresses, replay),
                                         s.slot, frozenset(s.keys))
        return Cursor(self.url, info.session_id, info.rpc_endpoint,
                      self.start_slot, self.end_slot, self.last_seq, streams, pending,
                      self.stepping.last_slot, self.stepping.paused_at,
                      self.stepping.ahead_points, self.stepping.at_rest)


def check_cursor(value: object) -> Cursor:
    if not isinstance(value, Cursor):
        raise TypeError(f"cursor: expected Cursor, got {type(value).__name__}")
    return value
