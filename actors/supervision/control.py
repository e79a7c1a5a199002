"""ControlActor: owns the control WebSocket (``/backtest``) for one connection's life.

First connection: ``createBacktestSession``, then ``sessionCreated`` gives the
session identity. Every later connection (a restart by the supervisor):
``attachBacktestSession`` with the last ``seqId`` the supervisor holds, then
``resumeAttachedSession``. Each handshake answer is bounded by
``Timing.handshake``. Session responses are forwarded with their ``seqId``; the
supervisor deduplicates replays. A create request is never written twice: if
the connection dies after it was written, the report says so and the
supervisor fails the start instead of retrying (the reference crate's rule:
retry connects, never re-send Create).
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol import (
    Attach,
    AttachParallel,
    BacktestError,
    Close,
    ContinueParams,
    ContinueToParams,
    CreateSession,
    Error,
    ProtocolError,
    Resume,
    SessionAttached,
    SessionCreated,
    SlotNotification,
    Success,
    decode_response,
    encode_request,
    resolve_rpc_url,
)
from protocol import Completed as WireCompleted
from protocol import DiscoveryBatch as WireDiscoveryBatch
from protocol import Paused as WirePaused
from protocol import ReadyForContinue as WireReady
from protocol import Status as WireStatus
from protocol.messages import Request, Response

from ..events import (
    CONTROL,
    Completed,
    DiscoveryBatch,
    ManagedEvent,
    Paused,
    ReadyForContinue,
    SessionInfo,
    Slot,
    Status,
)
from ..events import Error as ErrorEvent
from ..runtime.connection import Pong
from .link_actor import LinkActor

# --- what the control link reports ----------------------------------------------------


@attrs.frozen
class SessionReady:
    generation: int
    info: SessionInfo


@attrs.frozen
class ControlEvents:
    """Session responses in arrival order as events, each with its ``seqId`` (or
    ``None``); ``None`` for a response with nothing to deliver (it still counts
    for deduplication and credits)."""

    generation: int
    items: list[tuple[int | None, ManagedEvent | None]]


def to_event(msg: Response) -> ManagedEvent | None:
    if isinstance(msg, SlotNotification):
        return Slot(msg.slot)
    if isinstance(msg, WireStatus):
        return Status(msg.status)
    if isinstance(msg, WireReady):
        return ReadyForContinue()
    if isinstance(msg, WireCompleted):
        return Completed(msg.summary)
    if isinstance(msg, Error):
        return ErrorEvent(msg.error)
    if isinstance(msg, WirePaused):
        return Paused(msg.slot, msg.batch_index)
    if isinstance(msg, WireDiscoveryBatch):
        return DiscoveryBatch(msg.slot, msg.batch_index, msg.matched, msg.transactions,
                              msg.transaction_indices)
    return None  # unknown methods and stray lifecycle answers: nothing to deliver


@attrs.frozen
class ContinueWritten:
    generation: int


@attrs.frozen
class ContinueNotWritten:
    generation: int


# --- what the control link receives ---------------------------------------------------


@attrs.frozen
class WriteContinue:
    params: ContinueParams | ContinueToParams


@attrs.frozen
class CloseDeadline:
    pass


class ControlActor(LinkActor):
    def __init__(self, *, create: CreateSession, attach: Attach | AttachParallel | None,
                 api_key: str, **kwargs: Any) -> None:
        super().__init__(name=CONTROL, headers={"X-API-Key": api_key}, **kwargs)
        self._create = create
        self._attach = attach
        self._create_written = False
        self._resume_sent = False

    decode = staticmethod(decode_response)  # called once per frame, on the reader thread

    def on_opened(self) -> None:
        if self._attach is None:
            self._create_written = self._write(self._create)
        else:
            self._write(self._attach)
        self.expect_handshake_answer()

    def on_items(self, items: list[Any]) -> None:
        events: list[tuple[int | None, ManagedEvent | None]] = []
        malformed: list[Exception] = []
        consumed = 0  # lifecycle frames handled here: their credits come straight back
        for item in items:
            if isinstance(item, ProtocolError):
                malformed.append(item)
                continue
            if isinstance(item, Pong):
                continue
            seq, msg = item
            if self.phase == "handshake":
                outcome = self._advance_handshake(msg)
                if outcome == "up":
                    # What came before (an attach replay) reaches the supervisor
                    # before ChildUp: Up means "the replay is complete".
                    self._flush(events, malformed, consumed + 1)
                    events, malformed, consumed = [], [], 0
                    self.mark_up()
                    continue
                if outcome == "consumed":
                    consumed += 1
                    continue
                if outcome == "failed":
                    break
            elif isinstance(msg, SessionCreated | SessionAttached | Success):
                consumed += 1
                if isinstance(msg, Success) and self.phase == "closing":
                    self._flush(events, malformed, consumed)
                    self.finish_close()
                    return
                continue
            events.append((seq, to_event(msg)))
        self._flush(events, malformed, consumed)

    def on_command(self, message: Any) -> None:
        if isinstance(message, WriteContinue):
            self._write_continue(message.params)
        elif isinstance(message, CloseDeadline):
            if self.phase == "closing":
                self.log.info("no close acknowledgement within %ss", self.timing.graceful_close)
                self.finish_close()
        else:
            super().on_command(message)

    def close(self) -> None:
        """Graceful close: ``closeBacktestSession``, wait for ``success``, close frame."""
        if self.phase != "up" or not self._write(Close()):
            self.finish_close()
            return
        self.start_closing()
        self.schedule(self.timing.graceful_close, CloseDeadline())

    # --- internals ------

    def _advance_handshake(self, msg: Response) -> str:
        """Advance the create/attach handshake: ``up``, ``consumed``, ``forward`` or
        ``failed``."""
        if isinstance(msg, Error):
            self._handshake_error(msg.error)
            return "failed"
        if self._attach is None and isinstance(msg, SessionCreated):
            info = SessionInfo(msg.session_id, resolve_rpc_url(self._url, msg.rpc_endpoint),
                               msg.task_id)
            self.log.session_id = msg.session_id
            self.report(SessionReady(self.generation, info))
            return "up"
        if self._attach is not None and isinstance(msg, SessionAttached):
            self._resume_sent = self._write(Resume())
            self.expect_handshake_answer()
            return "consumed"
        if self._resume_sent and isinstance(msg, Success):
            return "up"
        if self._attach is None and isinstance(msg, WireCompleted):
            # The session ended before it was named: start() must fail, not wait.
            self.lost("the session completed before sessionCreated", terminal=True,
                      request_written=True)
            return "failed"
        return "forward"  # e.g. status before sessionCreated, or attach replay

    def _handshake_error(self, error: BacktestError) -> None:
        if self._attach is None:
            # Whatever the kind, a create that was answered is never sent again.
            self.lost(f"create rejected: {error}", terminal=True, request_written=True)
        else:
            self.lost(f"attach rejected: {error}", terminal=error.terminal)

    def _flush(self, events: list[tuple[int | None, ManagedEvent | None]],
               malformed: list[Exception],
               consumed: int) -> None:
        if events:
            self.report(ControlEvents(self.generation, events))
        if malformed:
            self.malformed(malformed)
        if consumed:
            self.conn.grant(consumed)

    def _write(self, request: Request) -> bool:
        try:
            self.conn.send(encode_request(request))
            return True
        except Exception as exc:  # noqa: BLE001 - the reader reports the broken socket
            self.log.info("write of %s failed: %s", type(request).__name__, exc)
            return False

    def _write_continue(self, params: ContinueParams | ContinueToParams) -> None:
        if self.phase != "up":
            self.report(ContinueNotWritten(self.generation))
            return
        if not self._write(params):
            # Bytes may have reached the server before the failure: counted as
            # written, never re-sent; the attach replay shows what it produced.
            self.log.warning("continue write failed; treated as written, not re-sent")
        self.report(ContinueWritten(self.generation))

    def lost(self, reason: str, *, terminal: bool = False, request_written: bool = False,
             hopeless_at_start: bool = False) -> None:
        super().lost(reason, terminal=terminal,
                     request_written=request_written or self._create_written,
                     hopeless_at_start=hopeless_at_start)
