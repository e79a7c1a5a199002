"""The CLI's JSONL journal: every event the run received, and the cursor's write-ahead record.

Layout (one JSON object per line):

* line 1, the header (``"type": "JournalHeader"``): the control URL and the
  session id (never the key), the rpc endpoint, the range, the subscribed
  addresses and ``--advance``; written once the session exists;
* one line per event returned by ``next_event`` (``protocol.codec.encode_record``),
  each with an extra ``seq``: the ``seqId`` of the last control event returned so
  far. Items need no more: a stream delivers in slot order, so its newest slot and
  the keys already seen at it are the whole resume point (:mod:`actors.decisions.cursor`);
* a ``ContinueSent`` line (its params and ``seq``) written *before* the continue
  is handed to the session.

**Rebuilding the cursor** (:func:`read_journal`) replays those lines through a
:class:`~actors.decisions.cursor.CursorTracker`: the last ``seq``, each stream's boundary,
and the continue state (a ``ContinueSent`` not followed by its answer is
pending, so the lost-continue rule settles it after the attach). A run killed
after writing ``ReadyForContinue`` but before ``ContinueSent`` resumes with
:attr:`JournalState.awaiting_continue`: the resumed run sends that continue.

**Flush and fsync policy.** Every line is flushed as it is written, so a
killed process (kill -9, OOM) loses nothing the OS has; the file is fsynced
after the header, at every ``ContinueSent`` (which follows each
``ReadyForContinue``), and at the end, so a machine crash loses at most the
events of the continue under way, which the server replays. A torn last line
(a crash mid-write) is ignored on resume and cut off before the first append;
a bad line anywhere else means the file is corrupt or not a journal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import attrs

from protocol import ContinueParams, ContinueToParams
from protocol.codec import (
    dump_document,
    encode_record,
    load_document,
    request_document,
    request_from_document,
)
from protocol.pubsub import ACTIONS_ADDRESS

from ..decisions.cursor import Cursor, CursorTracker, ItemDelta, SeqDelta
from ..decisions.stepping import DiscoveryTracker
from ..events import DiscoveryBatch, ManagedEvent, Paused, ReadyForContinue, SessionInfo, Slot

JOURNAL_FORMAT = "backtest-actors-journal"
HEADER = "JournalHeader"
CONTINUE_SENT = "ContinueSent"


class JournalError(ValueError):
    """A journal that cannot be resumed: corrupt, foreign, or from the embedded simulator."""


@attrs.frozen
class JournalHeader:
    url: str
    session_id: str
    rpc_endpoint: str
    start_slot: int
    end_slot: int
    transactions: tuple[str, ...]
    account_diffs: tuple[str, ...]
    advance: int
    embedded: bool = False
    # The run's flaky-link settings (keepalive_interval, keepalive_deadline,
    # reconnect_attempts, continue_quiet): what a resume uses unless told otherwise.
    knobs: dict[str, float] = attrs.field(factory=dict)
    # --discover programs and --inject transactions: a resume steps the same way.
    discover: tuple[str, ...] = ()
    inject: tuple[str, ...] = ()
    actions: bool = False  # subscribed to the action results (--actions)

    def to_line(self) -> str:
        return dump_document({"type": HEADER, "format": JOURNAL_FORMAT, "url": self.url,
                           "sessionId": self.session_id, "rpcEndpoint": self.rpc_endpoint,
                           "startSlot": self.start_slot, "endSlot": self.end_slot,
                           "transactions": list(self.transactions),
                           "accountDiffs": list(self.account_diffs), "advance": self.advance,
                           "embedded": self.embedded, "knobs": dict(self.knobs),
                           "discover": list(self.discover), "inject": list(self.inject),
                           "actions": self.actions})

    @classmethod
    def from_record(cls, record: Any) -> JournalHeader:
        if not isinstance(record, dict) or record.get("type") != HEADER or record.get(
                "format") != JOURNAL_FORMAT:
            raise JournalError("not a backtest-actors journal (no header line)")
        try:
            header = cls(record["url"], record["sessionId"], record["rpcEndpoint"],
                         record["startSlot"], record["endSlot"],
                         tuple(record["transactions"]), tuple(record["accountDiffs"]),
                         record["advance"], bool(record.get("embedded", False)),
                         dict(record.get("knobs") or {}),
                         tuple(record.get("discover") or ()), tuple(record.get("inject") or ()),
                         bool(record.get("actions", False)))
        except (KeyError, TypeError) as exc:
            raise JournalError(f"journal header: missing or bad field {exc}") from None
        for name in ("url", "session_id", "rpc_endpoint"):
            if not isinstance(getattr(header, name), str):
                raise JournalError(f"journal header: {name}: expected a string")
        if not all(isinstance(v, str) for v in header.discover + header.inject):
            raise JournalError("journal header: discover/inject: expected strings")
        if not all(isinstance(k, str) and type(v) in (int, float)
                   for k, v in header.knobs.items()):
            raise JournalError("journal header: knobs: expected numbers by name")
        for name in ("start_slot", "end_slot", "advance"):
            if type(getattr(header, name)) is not int:
                raise JournalError(f"journal header: {name}: expected an integer")
        return header


@attrs.frozen
class JournalState:
    """What a journal says: where to resume and what the run had done."""

    header: JournalHeader
    cursor: Cursor
    awaiting_continue: bool  # a ReadyForContinue was journaled, its continue was not
    completed: bool
    valid_bytes: int  # the length without a torn last line
    # Events journaled by the runs before, by kind ("Slot", "Transaction", ...): a resumed
    # run's summary counts the whole session, not only its own process.
    history: dict[str, int] = attrs.field(factory=dict)
    # Discoveries announced and where the session rests: a resumed --discover run
    # pauses before the same batches as one that was never interrupted.
    stepping: DiscoveryTracker = attrs.field(factory=DiscoveryTracker, eq=False)


class JournalWriter:
    """Writes the journal with the flush/fsync policy of the module docstring."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def header(self, header: JournalHeader) -> None:
        self._line(header.to_line(), sync=True)

    def event(self, event: ManagedEvent, seq: int | None) -> None:
        self._line(encode_record(event, seq=seq), sync=False)

    def continue_sent(self, params: ContinueParams | ContinueToParams, seq: int | None) -> None:
        self._line(dump_document({"type": CONTINUE_SENT, "seq": seq,
                                  "params": request_document(params)}), sync=True)

    def sync(self) -> None:
        self._out.flush()
        try:
            os.fsync(self._out.fileno())
        except (OSError, ValueError):
            pass  # not a real file (a pipe, a test buffer): flushed is all there is

    def _line(self, line: str, *, sync: bool) -> None:
        self._out.write(line + "\n")
        self._out.flush()
        if sync:
            self.sync()


def read_journal(path: str, *, allow_embedded: bool = False) -> JournalState:
    """Rebuild the cursor from a journal; :class:`JournalError` when it cannot be.

    ``allow_embedded``: the caller still runs the embedded simulator the journal
    was written against (a sweep resuming a session inside its own process).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise JournalError(f"cannot read the journal: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    valid = len(data)
    if lines and lines[-1] != b"":  # no newline at the end: the last line is torn
        valid -= len(lines[-1])
    lines = lines[:-1]
    if not lines:
        raise JournalError("the journal is empty (no header line)")
    records: list[Any] = []
    for number, raw in enumerate(lines, 1):
        try:
            records.append(load_document(raw))
        except ValueError:
            if number == len(lines) and number > 1:
                valid -= len(raw) + 1  # a torn line that happened to end the file
                break
            if number == 1:
                raise JournalError("not a backtest-actors journal (first line is not "
                                   "JSON)") from None
            raise JournalError(f"the journal is corrupt at line {number}") from None
    header = JournalHeader.from_record(records[0])
    if header.embedded and not allow_embedded:
        raise JournalError("this journal is from the embedded simulator, which died with its "
                           "process: it cannot be resumed")
    tracker = CursorTracker(header.url, _create(header))
    streams: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("transactions", header.transactions), ("account_diffs", header.account_diffs),
        ("actions", (ACTIONS_ADDRESS,) if header.actions else ()))
    for name, addresses in streams:
        if addresses:
            tracker.subscribed(name, addresses)
    awaiting = completed = False
    history: dict[str, int] = {}
    for number, record in enumerate(records[1:], 2):
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            raise JournalError(f"the journal is corrupt at line {number}")
        kind = record["type"]
        seq = record.get("seq")
        if seq is not None and type(seq) is not int:
            raise JournalError(f"the journal is corrupt at line {number} (seq)")
        if kind == CONTINUE_SENT:
            try:
                params = request_from_document(record["params"])
            except Exception:  # noqa: BLE001 - ProtocolError, KeyError
                raise JournalError(f"the journal is corrupt at line {number} "
                                   f"(continue params)") from None
            if not isinstance(params, ContinueParams | ContinueToParams):
                raise JournalError(f"the journal is corrupt at line {number}")
            tracker.last_seq = seq
            tracker.continue_sent(params)
            awaiting = False
            continue
        history[kind] = history.get(kind, 0) + 1
        if seq is not None:
            tracker.apply(SeqDelta(seq))
        try:
            if kind == "Transaction":
                tracker.apply(ItemDelta("transactions", "", record["slot"],
                                        record["signature"]))
            elif kind == "AccountDiff":
                tracker.apply(ItemDelta("account_diffs", "", record["slot"],
                                        (record["signature"], record["account"])))
            elif kind == "ActionResult":
                tracker.apply(ItemDelta("actions", "", record["slot"],
                                        f"action-{record['action_index']}"))
            elif kind in _STEPPING:  # where the session rests, and what it announced
                tracker.returned(_STEPPING[kind](record), None)
        except (KeyError, TypeError, ValueError):
            raise JournalError(f"the journal is corrupt at line {number}") from None
        if kind in ("ReadyForContinue", "Paused", "Completed", "Error") or (
                kind == "ContinueLost" and record.get("resent") is False):
            tracker.pending = None
            awaiting = kind in ("ReadyForContinue", "Paused")
            completed = completed or kind == "Completed"
    cursor = tracker.cursor(SessionInfo(header.session_id, header.rpc_endpoint))
    return JournalState(header, cursor, awaiting and cursor.pending_continue is None,
                        completed, valid, history, tracker.stepping)


# Journal records that say where the session rests or what it announced, rebuilt as
# the events the run saw (only the fields that matter to resuming).
_STEPPING: dict[str, Callable[[dict[str, Any]], ManagedEvent]] = {
    "Slot": lambda r: Slot(r["slot"]),
    "Paused": lambda r: Paused(r["slot"], r.get("batch_index")),
    "DiscoveryBatch": lambda r: DiscoveryBatch(r["slot"], r["batch_index"]),
    "ReadyForContinue": lambda r: ReadyForContinue(),
}


def _create(header: JournalHeader) -> Any:
    from protocol import CreateSession

    try:
        return CreateSession(header.start_slot, header.end_slot)
    except ValueError as exc:
        raise JournalError(f"journal header: {exc}") from None
