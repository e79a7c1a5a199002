"""Setting a supervisor's plain classes up for a session that is attached, not created.

Kept out of the supervisor (glue only): an attach from a :class:`~actors.decisions.cursor.Cursor`
seeds the outbox's deduplication (the last ``seqId`` and the boundary keys the
application already has) and the pacer's continue state, and names the session
before any connection is made, so the first control connection attaches.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..events import SessionInfo
from .cursor import CursorTracker
from .outbox import Outbox
from .pacer import ContinuePacer

if TYPE_CHECKING:  # the supervisor's config is read here, never built
    from ..supervision.config import SessionConfig


def prepare(config: SessionConfig, outbox: Outbox, pacer: ContinuePacer,
            log: logging.LoggerAdapter[logging.Logger]) -> SessionInfo | None:
    """The session's identity when ``config`` resumes a cursor (else None, until created).

    A listener session's cursor moves as events are told, so its tracker lives
    in the outbox; the blocking facade keeps its own.
    """
    if outbox.has_listener:
        outbox.tracker = CursorTracker(config.url, config.create, config.resume)
    cursor = config.resume
    if cursor is None:
        return None
    outbox.seed(cursor)
    pacer.resume(cursor.pending_continue, cursor.last_slot, cursor.paused_at,
                 seen_any=cursor.last_seq is not None)
    setattr(log, "session_id", cursor.session_id)  # noqa: B010 - a SessionLogger
    log.info("attaching after seqId %s; continue %s", cursor.last_seq,
             "pending" if cursor.pending_continue else "idle")
    return cursor.info
