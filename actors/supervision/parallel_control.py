"""ParallelControlActor: the one control WebSocket of a parallel session.

The reference's ``ParallelControlManager`` (managed-behavior.md §5.2): one
connection drives every sub-session. The first connection creates them
(``createBacktestSession`` with ``parallel``: one ``sessionCreated`` each, then
``sessionsCreatedV2``); every later one re-takes them all
(``attachParallelControlSessionV2`` with each sub-session's cursor, the replay,
then ``resumeAttachedSession`` and its ``success``: Up means "the replay is
complete", as for a single session). Up, it hands each ``sessionEventV2`` to
the :class:`~actors.supervision.parallel_hub.ParallelHub`, which routes it to
the sub-session's own supervisor, and writes what the hub asks for.

Flow control: the frames of every sub-session share this link, so its credits
come back as soon as the hub has the events (each sub-session's own outbox
bounds what it holds; a sub-session's control events are bounded by the
continues its pacer writes).
"""

from __future__ import annotations

from typing import Any

import attrs
import pykka

from protocol import (
    AttachParallel,
    BacktestError,
    CloseSession,
    ContinueParams,
    ContinueSession,
    ContinueToParams,
    CreateSession,
    Error,
    ParallelAttached,
    ProtocolError,
    Resume,
    SessionCreated,
    SessionEvent,
    SessionsCreated,
    Success,
)
from protocol.messages import Response

from ..runtime.connection import Pong
from .control import ControlActor

# --- what the link reports to the hub -------------------------------------------------


@attrs.frozen
class SubSessionsCreated:
    """The create was answered: the sub-sessions, in range order."""

    generation: int
    created: SessionsCreated
    endpoints: dict[str, str]  # session id -> rpc endpoint (as the server wrote it)


@attrs.frozen
class SubEvents:
    """``sessionEventV2`` frames in arrival order: ``(session_id, seq_id, response)``."""

    generation: int
    items: list[tuple[str, int | None, Response]]


@attrs.frozen
class SubSessionsAttached:
    """A re-attach was accepted: the sub-sessions the server still has (live)."""

    generation: int
    session_ids: tuple[str, ...]


@attrs.frozen
class LinkRefused:
    """A top-level ``error`` while Up (a request for an unknown or closed sub-session):
    it names no sub-session, so the hub logs it; nothing else is affected."""

    generation: int
    error: BacktestError


@attrs.frozen
class WrittenFor:
    """The hub's write request is done: ``written`` False when it never reached the wire."""

    session_id: str
    written: bool


# --- what the link receives -------------------------------------------------------------


@attrs.frozen
class WriteFor:
    """Write a sub-session's continue, continue-to or close; ``reply_to`` is told a
    :class:`WrittenFor`."""

    session_id: str
    request: ContinueParams | ContinueToParams | None  # None: closeSessionV1
    reply_to: pykka.ActorRef[Any] = attrs.field(eq=False)


class ParallelControlActor(ControlActor):
    """A control link (the connect, the create-or-attach write, the graceful close and
    the create-written rule are :class:`ControlActor`'s) whose answers are the
    parallel ones and whose events are routed, not delivered."""

    def __init__(self, *, create: CreateSession, attach: AttachParallel | None,
                 api_key: str, **kwargs: Any) -> None:
        super().__init__(create=create, attach=attach, api_key=api_key, **kwargs)
        self._endpoints: dict[str, str] = {}

    def on_items(self, items: list[Any]) -> None:
        events: list[tuple[str, int | None, Response]] = []
        malformed: list[Exception] = []
        for item in items:
            if isinstance(item, ProtocolError):
                malformed.append(item)
                continue
            if isinstance(item, Pong):
                continue
            _, msg = item
            if isinstance(msg, SessionEvent):
                events.append((msg.session_id, msg.seq_id, msg.event))
            elif self.phase == "handshake":
                self._handshake(msg, events)
            elif isinstance(msg, Error):
                self.report(LinkRefused(self.generation, msg.error))
            elif isinstance(msg, Success) and self.phase == "closing":
                self.finish_close()
                return
        if events:
            self.report(SubEvents(self.generation, events))
        if malformed:
            self.malformed(malformed)
        self.conn.grant(len(items) - len(malformed))

    def on_command(self, message: Any) -> None:
        if isinstance(message, WriteFor):
            written = self.phase == "up" and self._write(
                CloseSession(message.session_id) if message.request is None
                else ContinueSession(message.session_id, message.request))
            # A failed write may still have reached the server: counted as written,
            # never re-sent; the attach replay shows what it produced.
            try:
                message.reply_to.tell(WrittenFor(message.session_id,
                                                 written or self.phase == "up"))
            except pykka.ActorDeadError:
                pass
        else:
            super().on_command(message)  # the close deadline, the link's own

    # --- internals ------

    def _handshake(self, msg: Response,
                   events: list[tuple[str, int | None, Response]]) -> None:
        if isinstance(msg, Error):
            what = "create" if self._attach is None else "attach"
            terminal = self._attach is None or msg.error.terminal
            self.lost(f"{what} rejected: {msg.error}", terminal=terminal,
                      request_written=self._attach is None)
        elif isinstance(msg, SessionCreated):
            self._endpoints[msg.session_id] = msg.rpc_endpoint
        elif isinstance(msg, SessionsCreated) and self._attach is None:
            self.report(SubSessionsCreated(self.generation, msg, dict(self._endpoints)))
            self.mark_up()
        elif isinstance(msg, ParallelAttached) and self._attach is not None:
            self.report(SubSessionsAttached(self.generation, msg.session_ids))
            self._resume_sent = self._write(Resume())
            self.expect_handshake_answer()
        elif isinstance(msg, Success) and self._resume_sent:
            # What came before (the replay) reaches the hub before Up.
            if events:
                self.report(SubEvents(self.generation, list(events)))
                events.clear()
            self.mark_up()
