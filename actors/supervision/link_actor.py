"""What every connection actor shares: lifecycle, keepalive, liveness, reporting.

A connection actor ("link") is simple and short-lived: connect, handshake, run.
On any transport fault (close, error, missed liveness deadline, handshake
timeout) it reports :class:`ChildLost` with the reason and stops. It never
retries by itself; the supervisor owns every retry decision.

Keepalive: a WebSocket ping every ``Timing.keepalive_interval``; the link is
dead when no inbound frame of any kind (pong included) arrived for
``Timing.keepalive_deadline``, checked on each tick (and on one extra tick just
past the deadline), so a blackhole is found within ``deadline + interval``.

While the reader is paused for flow control (the application is slow), frames
wait unread in the kernel, pongs included, so silence says nothing about the
peer: the deadline is not checked while paused and the clock restarts on
resume. Pings are still sent. A peer that died during the pause is found one
deadline after the application catches up.

Keepalive pings are numbered (payload ``keepalive-N``). A peer answers pings in
the order it read them, so a numbered pong also says that every ping sent
before ping N was answered (or its pong was lost): a subscription link uses
that to find a lost barrier pong without guessing a time for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
import pykka

from protocol import Timing

from ..logs import SessionLogger
from ..runtime.connection import (
    DEFAULT_MAX_FRAME_SIZE,
    ConnectFailed,
    Connection,
    Disconnected,
    Opened,
    ReaderPaused,
    ReaderResumed,
    Received,
)
from ..runtime.inbox import SimpleInboxActor
from ..runtime.timers import Scheduler, TimerHandle

# HTTP answers to an upgrade that no retry can fix (bad key, wrong path).
TERMINAL_HTTP_STATUSES = frozenset({400, 401, 403, 404})

# --- what a link reports to its supervisor ------------------------------------------


@attrs.frozen
class ChildUp:
    name: str
    generation: int


@attrs.frozen
class ChildLost:
    name: str
    generation: int
    reason: str
    terminal: bool = False
    request_written: bool = False  # control: the create request reached the wire
    hopeless_at_start: bool = False  # terminal while the session does not exist yet


@attrs.frozen
class ChildClosed:
    """Stopped on purpose (end of session or shutdown)."""

    name: str
    generation: int


@attrs.frozen
class LinkFlow:
    """The reader paused (out of credits) or resumed: for stats and tests."""

    name: str
    generation: int
    paused: bool


@attrs.frozen
class FramesMalformed:
    name: str
    generation: int
    count: int


# --- what a link receives -------------------------------------------------------------


KEEPALIVE_PREFIX = b"keepalive-"


def keepalive_number(payload: bytes) -> int | None:
    """The N of a ``keepalive-N`` pong; ``None`` for any other payload."""
    if payload.startswith(KEEPALIVE_PREFIX) and payload[len(KEEPALIVE_PREFIX):].isdigit():
        return int(payload[len(KEEPALIVE_PREFIX):])
    return None


@attrs.frozen
class KeepaliveTick:
    pass


@attrs.frozen
class HandshakeDeadline:
    step: int


@attrs.frozen
class ConnectDeadline:
    """``Timing.connect`` after the start: the whole connect (TCP + TLS + upgrade) is late."""


@attrs.frozen
class Grant:
    """Give back flow-control credits: events from this link left the client."""

    credits: int


@attrs.frozen
class CloseLink:
    """Stop on purpose; the control link closes the session gracefully first, unless
    ``detach``: then the server keeps the session for a later attach (a cursor)."""

    detach: bool = False


Phase = Literal["connecting", "handshake", "up", "closing", "done"]


class LinkActor(SimpleInboxActor):
    use_daemon_thread = True

    def __init__(self, *, name: str, supervisor: pykka.ActorRef[Any], generation: int,
                 url: str, timing: Timing, scheduler: Scheduler, window: int,
                 session_id: str, headers: dict[str, str] | None = None,
                 sslopt: dict[str, Any] | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__()
        self.name = name
        self._supervisor = supervisor
        self._generation = generation
        self._url = url
        self._timing = timing
        self._scheduler = scheduler
        self._window = window
        self._headers = headers
        self._sslopt = sslopt
        self._max_frame_size = max_frame_size
        self._log = SessionLogger(name, session_id)
        self._phase: Phase = "connecting"
        self._handshake_step = 0
        self._paused = False
        self._last_inbound = time.monotonic()
        self._keepalives_sent = 0
        self._timers: list[TimerHandle] = []
        # The connect or handshake step's deadline, cancelled as the step completes
        # (its message is still checked for staleness: it may be queued already).
        self._step_deadline: TimerHandle | None = None
        self._conn: Connection | None = None

    # --- hooks for the concrete links ------

    # The codec function of this link's frames, run on the reader thread once per
    # frame: a plain function (a staticmethod), so no method frame wraps it.
    decode: Callable[[bytes], Any]

    def on_opened(self) -> None:
        raise NotImplementedError

    def on_items(self, items: list[Any]) -> None:
        raise NotImplementedError

    def on_command(self, message: Any) -> None:
        self._log.warning("unexpected message %r", type(message).__name__)

    def close(self) -> None:
        self.finish_close()

    # --- pykka ------

    def on_start(self) -> None:
        try:
            self._conn = Connection(
                self._url, owner=self.actor_ref, decode=self.decode, window=self._window,
                connect_timeout=self._timing.connect, headers=self._headers, name=self.name,
                sslopt=self._sslopt, max_frame_size=self._max_frame_size)
            self._conn.start()
            # One timer bounds the whole connect; the socket timeout only bounds each read.
            self._set_step_deadline(self._timing.connect, ConnectDeadline())
        except Exception as exc:  # noqa: BLE001 - e.g. "can't start new thread"
            # pykka would stop this actor silently (on_failure is not called for
            # on_start): report it like any lost connection, so the supervisor
            # retries or fails the session instead of waiting for ever.
            self._phase = "done"
            self.report(ChildLost(self.name, self._generation,
                                  f"connection actor failed to start: {exc!r}"))
            self.stop()

    def on_receive(self, message: Any) -> Any:
        if self._phase == "done":
            return None  # reported and stopping: what is still queued is moot
        if isinstance(message, Received):
            self._last_inbound = time.monotonic()
            self.on_items(message.items)
        elif isinstance(message, Opened):
            self._set_step_deadline(None)
            self._phase = "handshake"
            self._last_inbound = time.monotonic()
            self._schedule(self._timing.keepalive_interval, KeepaliveTick())
            self.on_opened()
        elif isinstance(message, ConnectFailed):
            self.lost(f"connect failed: {message.reason}",
                      terminal=message.terminal or message.status in TERMINAL_HTTP_STATUSES,
                      hopeless_at_start=message.hopeless_at_start)
        elif isinstance(message, Disconnected):
            self.on_disconnected(message.reason)
        elif isinstance(message, ReaderPaused):
            self._paused = True
            self.report(LinkFlow(self.name, self._generation, True))
        elif isinstance(message, ReaderResumed):
            self._paused = False
            self._last_inbound = time.monotonic()
            self.report(LinkFlow(self.name, self._generation, False))
        elif isinstance(message, KeepaliveTick):
            self._keepalive()
        elif isinstance(message, ConnectDeadline):
            if self._phase == "connecting" and self.conn.expire_connect():
                self.lost(f"connect timed out after {self._timing.connect}s "
                          "(TCP + TLS + upgrade)")
        elif isinstance(message, HandshakeDeadline):
            if self._phase == "handshake" and message.step == self._handshake_step:
                self.lost(f"no handshake answer within {self._timing.handshake}s")
        elif isinstance(message, Grant):
            self.conn.grant(message.credits)
        elif isinstance(message, CloseLink):
            if message.detach:
                self.finish_close()
            elif self._phase not in ("closing", "done"):
                self.close()
        else:
            self.on_command(message)
        return None

    def on_stop(self) -> None:
        self._release()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # pykka has already stopped this actor; the supervisor restarts a fresh one.
        self._release()
        if self._phase != "done":
            self._phase = "done"
            self.report(ChildLost(self.name, self._generation,
                                  f"actor crashed: {exception_value!r}"))

    # --- helpers for the concrete links ------

    @property
    def conn(self) -> Connection:
        assert self._conn is not None
        return self._conn

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def paused(self) -> bool:
        """The reader is out of credits: what the peer sent waits unread."""
        return self._paused

    @property
    def keepalives_sent(self) -> int:
        """How many numbered keepalive pings this link has written."""
        return self._keepalives_sent

    @property
    def generation(self) -> int:
        return self._generation

    def report(self, message: Any) -> None:
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            pass  # the session is shutting down

    def expect_handshake_answer(self) -> None:
        """Each awaited handshake answer is bounded by ``Timing.handshake``."""
        self._handshake_step += 1
        self._set_step_deadline(self._timing.handshake, HandshakeDeadline(self._handshake_step))

    def mark_up(self) -> None:
        self._phase = "up"
        self._handshake_step += 1  # any pending handshake deadline is now stale
        self._set_step_deadline(None)
        self.report(ChildUp(self.name, self._generation))

    def malformed(self, errors: list[Exception]) -> None:
        """A bad frame is logged with its start and counted; it never ends the link."""
        for error in errors:
            self._log.warning("malformed frame dropped: %s", error)
        self.conn.grant(len(errors))
        self.report(FramesMalformed(self.name, self._generation, len(errors)))

    def lost(self, reason: str, *, terminal: bool = False, request_written: bool = False,
             hopeless_at_start: bool = False) -> None:
        if self._phase in ("closing", "done"):
            return
        self._phase = "done"
        self._log.info("connection lost: %s", reason)
        self.report(ChildLost(self.name, self._generation, reason, terminal, request_written,
                              hopeless_at_start))
        self.stop()

    def on_disconnected(self, reason: str) -> None:
        if self._phase == "closing":
            self.finish_close()
        else:
            self.lost(reason)

    def start_closing(self) -> None:
        self._phase = "closing"

    def finish_close(self) -> None:
        if self._phase == "done":
            return
        self._phase = "done"
        self.conn.send_close()
        self.report(ChildClosed(self.name, self._generation))
        self.stop()

    def schedule(self, delay: float, message: Any) -> None:
        self._schedule(delay, message)

    @property
    def timing(self) -> Timing:
        return self._timing

    @property
    def log(self) -> SessionLogger:
        return self._log

    # --- internals ------

    def _schedule(self, delay: float, message: Any) -> TimerHandle:
        self._timers = [t for t in self._timers if t.pending]
        handle = self._scheduler.schedule(delay, self.actor_ref, message)
        self._timers.append(handle)
        return handle

    def _set_step_deadline(self, delay: float | None, message: Any = None) -> None:
        """Replace the current step's deadline (``None``: the step is done)."""
        if self._step_deadline is not None:
            self._step_deadline.cancel()
        self._step_deadline = None if delay is None else self._schedule(delay, message)

    def _keepalive(self) -> None:
        if self._phase not in ("handshake", "up"):
            return
        silent_for = time.monotonic() - self._last_inbound
        if not self._paused and silent_for > self._timing.keepalive_deadline:
            self.lost(f"no inbound frame for {silent_for:.3f}s "
                      f"(keepalive deadline {self._timing.keepalive_deadline}s)")
            return
        self._keepalives_sent += 1
        self.conn.ping(KEEPALIVE_PREFIX + str(self._keepalives_sent).encode())
        # Tick again at the interval, or just past the deadline if that comes first,
        # so a silent peer is found at the deadline rather than up to an interval late.
        until_deadline = self._timing.keepalive_deadline - silent_for + 0.001
        self._schedule(max(0.001, min(self._timing.keepalive_interval, until_deadline)),
                       KeepaliveTick())

    def _release(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._conn is not None:
            self._conn.abort()
            if not self._conn.join(timeout=2.0):
                self._log.warning("reader thread did not stop within 2s")
