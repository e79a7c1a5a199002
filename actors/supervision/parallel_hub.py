"""ParallelHub: supervises the one control link of a parallel session and routes it.

Each sub-session is a whole :class:`~actors.supervision.supervisor.SessionSupervisor`
(its own pacer, outbox, subscriptions and gating), whose control child is a
:class:`~actors.supervision.sub_control.SubControlActor` instead of a socket. The
hub sits between those ports and the shared
:class:`~actors.supervision.parallel_control.ParallelControlActor`:

* it starts the link, and restarts it after a loss with the session's
  :class:`ReconnectPolicy` (the same :class:`~actors.decisions.children.Children`
  arithmetic as a supervisor's links). A restart re-attaches every sub-session
  at once, from the last ``seq_id`` the hub handed each one;
* it routes each ``sessionEventV2`` to its sub-session's port. A port learns the
  link's state from the hub (``SharedUp``, ``SharedLost``) and reports it to its
  supervisor as its own, so a sub-session gates its continues on the shared link
  and its own subscriptions, and its lost-continue rule sees the re-attach;
* events for a sub-session with no live port (its port is being restarted) wait
  here, then go to the next port after what it says it has (its ``last_seq``).

Why the hub's own count is a safe cursor for the re-attach: a port forwards what
it is handed before anything later from the hub, and its supervisor handles it
before the port's loss report (both in order, from one sender), so whatever the
hub handed a port reaches that sub-session's outbox; the outbox drops anything
replayed twice.

One sub-session's failure is its own: its supervisor fails, the hub and the other
sub-sessions go on. A link that cannot come back (budget spent, a terminal
refusal) fails every sub-session, each with its range named.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import pykka

from protocol import AttachParallel, CreateSession, ReconnectPolicy, SessionsCreated, Timing
from protocol.messages import Response

from ..decisions.children import Children, GiveUp, Restart
from ..decisions.outbox import fail_reply
from ..events import CONTROL, Connecting, ManagedSessionError, Up
from ..logs import SessionLogger
from ..runtime.timers import Scheduler
from .link_actor import ChildClosed, ChildLost, ChildUp, CloseLink, FramesMalformed, LinkFlow
from .parallel_control import (
    LinkRefused,
    ParallelControlActor,
    SubEvents,
    SubSessionsAttached,
    SubSessionsCreated,
    WriteFor,
    WrittenFor,
)
from .supervisor import tell_unless_gone

# --- what ports tell the hub, and the hub tells ports ---------------------------------


@attrs.frozen
class Register:
    """A sub-session's control port started; it has every event through ``last_seq``."""

    session_id: str
    port: pykka.ActorRef[Any] = attrs.field(eq=False)
    last_seq: int | None


@attrs.frozen
class Unregister:
    session_id: str
    port: pykka.ActorRef[Any] = attrs.field(eq=False)
    closed: bool = False  # the sub-session is over: what still comes for it is dropped


@attrs.frozen
class PortEvents:
    items: list[tuple[int | None, Response]]


@attrs.frozen
class SharedUp:
    pass


@attrs.frozen
class SharedLost:
    reason: str
    terminal: bool = False


@attrs.frozen
class RestartLink:
    generation: int


@attrs.frozen
class StopHub:
    """Close the link gracefully (every sub-session closed on the server) unless
    ``detach``; ``reply`` resolves once it is closed."""

    reply: pykka.Future[None] = attrs.field(eq=False)
    detach: bool = False


@attrs.frozen
class CloseDeadline:
    pass


@attrs.frozen
class HubStats:
    """``ask`` it: the hub's counters."""


class ParallelHub(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, *, url: str, api_key: str, create: CreateSession,
                 policy: ReconnectPolicy, timing: Timing, scheduler: Scheduler,
                 started: pykka.Future[tuple[SessionsCreated, dict[str, str]] | None],
                 sslopt: dict[str, Any] | None = None,
                 attach: AttachParallel | None = None,
                 sub_sessions: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._url, self._api_key, self._create = url, api_key, create
        self._timing, self._scheduler, self._sslopt = timing, scheduler, sslopt
        self._started: pykka.Future[Any] | None = started
        self._policy = policy
        self._children = Children(policy, send=tell_unless_gone)
        self._children.add(CONTROL)
        self._log = SessionLogger("parallel", "")
        self._control_id: str | None = None
        self._up = False
        self._ports: dict[str, pykka.ActorRef[Any]] = {}
        self._handed: dict[str, int] = {}  # the newest seq_id handed to a port
        self._waiting: dict[str, list[tuple[int | None, Response]]] = {}
        self._known: set[str] = set()  # the sub-sessions the create named
        self._closed: set[str] = set()  # sub-sessions over (completed, closed, failed)
        self._gone: set[str] = set()  # sub-sessions the server said it no longer has
        self._stopping: StopHub | None = None
        self._failed: str | None = None
        if attach is not None:  # resumed: every sub-session from the seq its cursor has
            self._control_id = attach.control_session_id
            self._handed = dict(attach.last_sequences)
            self._known.update(sub_sessions)
        self.stats = {"link_restarts": 0, "events_routed": 0, "events_held": 0,
                      "refusals": 0, "malformed_frames": 0, "events_dropped": 0}

    # --- pykka ------

    def on_start(self) -> None:
        self._spawn()

    def on_receive(self, message: Any) -> Any:
        handler = _HANDLERS.get(type(message))
        if handler is not None:
            return handler(self, message)
        if isinstance(message, HubStats):
            return {**self.stats, "control_session_id": self._control_id,
                    "sub_sessions_closed": len(self._closed)}
        return None

    def on_stop(self) -> None:
        ref = self._children[CONTROL].ref
        if ref is not None:
            ref.stop(block=False)
        self._children.cancel_timers()

    # --- the link ------

    def _spawn(self) -> None:
        child = self._children[CONTROL]
        child.generation += 1
        attach = None if self._control_id is None else AttachParallel(
            self._control_id, dict(self._handed))
        child.ref = ParallelControlActor.start(
            create=self._create, attach=attach, api_key=self._api_key, url=self._url,
            supervisor=self.actor_ref, generation=child.generation, timing=self._timing,
            scheduler=self._scheduler, window=64, session_id=self._control_id or "",
            sslopt=self._sslopt)

    def _current(self, generation: int) -> bool:
        return self._children.current(CONTROL, generation)

    def _on_created(self, message: SubSessionsCreated) -> None:
        if not self._current(message.generation):
            return
        self._control_id = message.created.control_session_id
        self._known.update(message.created.session_ids)
        self._log.session_id = self._control_id
        self._log.info("parallel session created: %d sub-sessions",
                       len(message.created.session_ids))
        if self._started is not None:
            self._started.set((message.created, message.endpoints))
            self._started = None

    def _on_up(self, message: ChildUp) -> None:
        if not self._current(message.generation) or self._stopping is not None:
            return
        self._up = True
        self._children.set_status(CONTROL, Up())
        if self._started is not None:  # an attach: the sub-sessions are the cursors'
            self._started.set(None)
            self._started = None
        self._children[CONTROL].timer = self._scheduler.schedule(
            self._policy.uptime_reset, self.actor_ref, _UptimeCheck(message.generation))
        for port in list(self._ports.values()):
            tell_unless_gone(port, SharedUp())

    def _on_uptime(self, message: _UptimeCheck) -> None:
        if self._current(message.generation) and self._up:
            self._children.stayed_up(CONTROL, message.generation)

    def _on_lost(self, message: ChildLost) -> None:
        if not self._current(message.generation):
            return
        child = self._children[CONTROL]
        child.ref = None
        self._up = False
        self._children.set_status(CONTROL, Connecting())
        if self._stopping is not None:
            self._finish_stop()
            return
        decision = self._children.lost(
            CONTROL, message.reason, time.monotonic(), terminal=message.terminal,
            created=self._control_id is not None, create_written=message.request_written,
            completed=False)
        terminal = isinstance(decision, GiveUp)
        self._tell_ports(SharedLost(message.reason, terminal=terminal))
        if isinstance(decision, Restart):
            self.stats["link_restarts"] += 1
            self._log.warning("shared control lost (%s); restart %d in %.3fs",
                              message.reason, decision.attempt, decision.delay)
            child.timer = self._scheduler.schedule(decision.delay, self.actor_ref,
                                                   RestartLink(child.generation))
            return
        reason = decision.reason if isinstance(decision, GiveUp) else message.reason
        self._failed = reason
        self._log.warning("shared control failed for good: %s", reason)
        if self._started is not None:
            kind = decision.kind if isinstance(decision, GiveUp) else "create"
            fail_reply(self._started, ManagedSessionError(kind, reason))
            self._started = None

    def _on_restart(self, message: RestartLink) -> None:
        child = self._children[CONTROL]
        if (message.generation == child.generation and child.ref is None
                and self._stopping is None and self._failed is None):
            self._spawn()

    def _on_closed(self, message: ChildClosed) -> None:
        if self._current(message.generation):
            self._children[CONTROL].ref = None
            self._up = False
            self._finish_stop()

    def _on_attached(self, message: SubSessionsAttached) -> None:
        """The server's list after a re-attach: a sub-session it no longer has (closed,
        failed, expired) can never answer; its port is told so, for good."""
        if not self._current(message.generation):
            return
        for session_id in sorted(self._known - set(message.session_ids) - self._closed):
            self._closed.add(session_id)
            self._gone.add(session_id)
            port = self._ports.pop(session_id, None)
            if port is not None:
                tell_unless_gone(port, SharedLost(f"sub-session {session_id} no longer exists "
                                                  f"on the server", terminal=True))

    def _on_refused(self, message: LinkRefused) -> None:
        self.stats["refusals"] += 1
        self._log.warning("the server refused a sub-session request: %s", message.error)

    def _on_malformed(self, message: FramesMalformed) -> None:
        self.stats["malformed_frames"] += message.count

    # --- routing ------

    def _on_events(self, message: SubEvents) -> None:
        if not self._current(message.generation):
            return
        by_session: dict[str, list[tuple[int | None, Response]]] = {}
        for session_id, seq, event in message.items:
            if session_id not in self._known or session_id in self._closed:
                # A server's mistake (a sub-session it never named, or one that is
                # over): dropped and counted, the others go on.
                self.stats["events_dropped"] += 1
                self._log.warning("sessionEventV2 for %s sub-session %s dropped",
                                  "a closed" if session_id in self._known else "an unknown",
                                  session_id)
                continue
            if seq is not None:
                self._handed[session_id] = max(self._handed.get(session_id, 0), seq)
            by_session.setdefault(session_id, []).append((seq, event))
        for session_id, items in by_session.items():
            port = self._ports.get(session_id)
            if port is not None and tell_unless_gone(port, PortEvents(items)):
                self.stats["events_routed"] += len(items)
            else:
                self.stats["events_held"] += len(items)
                self._waiting.setdefault(session_id, []).extend(items)

    def _on_register(self, message: Register) -> None:
        if message.session_id in self._gone:
            tell_unless_gone(message.port, SharedLost(
                f"sub-session {message.session_id} no longer exists on the server",
                terminal=True))
            return
        self._ports[message.session_id] = message.port
        held = self._waiting.pop(message.session_id, [])
        after = -1 if message.last_seq is None else message.last_seq
        items = [(seq, event) for seq, event in held if seq is None or seq > after]
        if items:
            tell_unless_gone(message.port, PortEvents(items))
        if self._failed is not None:
            tell_unless_gone(message.port, SharedLost(self._failed, terminal=True))
        elif self._up:
            tell_unless_gone(message.port, SharedUp())

    def _on_unregister(self, message: Unregister) -> None:
        if self._ports.get(message.session_id) is message.port:
            del self._ports[message.session_id]
        if message.closed:
            self._closed.add(message.session_id)
            self.stats["events_dropped"] += len(self._waiting.pop(message.session_id, []))

    def _on_write(self, message: WriteFor) -> None:
        link = self._children[CONTROL].ref
        if not self._up or link is None or not tell_unless_gone(link, message):
            tell_unless_gone(message.reply_to, WrittenFor(message.session_id, False))

    def _tell_ports(self, message: Any) -> None:
        for port in list(self._ports.values()):
            tell_unless_gone(port, message)
        self._ports.clear()  # a lost link ends every port; their successors register

    # --- shutdown ------

    def _on_stop(self, message: StopHub) -> None:
        if self._stopping is not None:
            message.reply.set(None)
            return
        self._stopping = message
        link = self._children[CONTROL].ref
        self._children.cancel_timers()
        if link is None or not tell_unless_gone(link, CloseLink(detach=message.detach)):
            self._finish_stop()
            return
        self._scheduler.schedule(self._timing.graceful_close + 0.5, self.actor_ref,
                                 CloseDeadline())

    def _on_close_deadline(self, _: CloseDeadline) -> None:
        self._finish_stop()

    def _finish_stop(self) -> None:
        stopping, self._stopping = self._stopping, None
        if stopping is None:
            return
        self._tell_ports(SharedLost("parallel session shut down", terminal=True))
        stopping.reply.set(None)
        self.stop()


@attrs.frozen
class _UptimeCheck:
    generation: int


_HANDLERS: dict[type, Any] = {
    SubSessionsCreated: ParallelHub._on_created,
    ChildUp: ParallelHub._on_up,
    ChildLost: ParallelHub._on_lost,
    ChildClosed: ParallelHub._on_closed,
    _UptimeCheck: ParallelHub._on_uptime,
    RestartLink: ParallelHub._on_restart,
    SubEvents: ParallelHub._on_events,
    LinkRefused: ParallelHub._on_refused,
    SubSessionsAttached: ParallelHub._on_attached,
    FramesMalformed: ParallelHub._on_malformed,
    LinkFlow: lambda self, m: None,
    Register: ParallelHub._on_register,
    Unregister: ParallelHub._on_unregister,
    WriteFor: ParallelHub._on_write,
    StopHub: ParallelHub._on_stop,
    CloseDeadline: ParallelHub._on_close_deadline,
}
