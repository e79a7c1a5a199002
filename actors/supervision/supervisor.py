"""SessionSupervisor: the glue between the connection actors and the application.

Erlang/Akka backoff-supervisor style: the connection actors connect, handshake,
run and report; this actor starts them, routes their reports and restarts them
in *resume mode* (control: attach with the last ``seqId``; subscription:
``replayFromSlot``). A session resumed from a cursor (``SessionConfig.resume``,
set up by :mod:`actors.decisions.resume_setup`) is in resume mode from its first connection.
Its decisions live in plain classes beside it:
:class:`~actors.decisions.pacer.ContinuePacer` (when a continue or a chunk of one may go,
barriers, ``Completed``, gaps, lost continues), :class:`~actors.decisions.outbox.Outbox`
(what the application gets, once) and :class:`~actors.decisions.children.Children`
(generations and restart budgets). A bug in a handler fails the session with a
typed ``internal`` error after the queued events (:mod:`actors.runtime.failsafe`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from protocol import Attach, BacktestError, ContinueToParams, pubsub_url

from ..decisions.children import Children, GiveUp, StayClosed
from ..decisions.outbox import Outbox, fail_reply
from ..decisions.pacer import ContinuePacer
from ..decisions.permits import RestartPermits
from ..decisions.resume_setup import prepare
from ..decisions.streams import Streams
from ..events import (
    CONTROL,
    Closed,
    ConnectionChanged,
    ConnectionStatus,
    Error,
    ErrorKind,
    Failed,
    ManagedSessionError,
    Reconnecting,
    SessionInfo,
    Up,
)
from ..logs import SessionLogger
from ..requests import (
    CancelTake,
    ContinueRefused,
    GetCursor,
    GetStats,
    GetStatus,
    ListenerAttached,
    SendContinue,
    Shutdown,
    SubscribeStream,
    TakeEvents,
    UnsubscribeStream,
)
from ..runtime.failsafe import FailSafeActor
from ..runtime.timers import Scheduler, TimerHandle
from ..stats import SessionStats
from .config import SessionConfig
from .control import (
    ContinueNotWritten,
    ContinueWritten,
    ControlActor,
    ControlEvents,
    SessionReady,
    WriteContinue,
)
from .link_actor import ChildClosed, ChildLost, ChildUp, CloseLink, FramesMalformed, Grant, LinkFlow
from .reminders import QuietCheck, RestartChild, ShutdownDeadline, UptimeCheck
from .subscription import Barrier, BarrierReached, StreamItems, SubscriptionActor

# How a link reports the server's "message too big" close (runtime/connection.py).
TOO_BIG = "(code 1009)"


def tell_unless_gone(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Tell ``ref`` ``message``; False when its actor is gone (the plain classes of
    :mod:`actors.decisions` take this instead of catching pykka's error themselves)."""
    try:
        ref.tell(message)
        return True
    except pykka.ActorDeadError:
        return False


def told(ref: pykka.ActorRef[Any]) -> Callable[[Any], bool]:
    """``ref``'s tell as a plain callable: False once its actor is gone."""
    return lambda message: tell_unless_gone(ref, message)


class SessionSupervisor(FailSafeActor):
    """The actor behind one session; see the module docstring.

    Started by ``ManagedBacktestSession.start``/``attach`` (never directly by an
    application); an application actor talks to it through ``session.supervisor``
    (or :class:`~actors.requests.ListenerAttached`) with the messages of
    :mod:`actors.requests`: ``SendContinue``, ``SubscribeStream``,
    ``UnsubscribeStream``, ``GetStatus``, ``GetStats``, ``GetCursor``. It never
    blocks: every answer that must wait (a continue written, an unsubscribe
    confirmed) completes a future carried in the message.
    """

    def __init__(self, config: SessionConfig, *, scheduler: Scheduler,
                 started: pykka.Future[SessionInfo],
                 listener: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self._config = config
        self._timing = config.timing
        self._scheduler = scheduler
        self._started: pykka.Future[SessionInfo] | None = started
        self._listener = listener
        self._log = SessionLogger("supervisor")
        self._outbox = Outbox(window=config.window, log=self._log,
                              listener=None if listener is None else told(listener))
        self._pacer = ContinuePacer(max_run_ahead=config.max_run_ahead,
                                  on_lost_continue=config.on_lost_continue)
        self._info: SessionInfo | None = prepare(config, self._outbox, self._pacer, self._log)
        self._children = Children(config.policy, send=tell_unless_gone)
        if config.control:
            self._children.add(CONTROL)
        self._failure: ManagedSessionError | None = None
        self._shutdown: Shutdown | None = None
        self._shutdown_timer: TimerHandle | None = None
        self._stats = {"malformed_frames": 0, "continues_refused": 0}
        self._completed_delivered = False  # Completed was put: no event may follow it
        self._streams = Streams(self._children, self._outbox, self._pacer, self._log)
        self._permits = RestartPermits(  # past the ungated attempts: the policy's gate
            config.policy, lambda: self._log.session_id,
            lambda message: tell_unless_gone(self.actor_ref, message))

    # --- pykka ------

    def on_start(self) -> None:
        """Tell the listener where to answer, then start the control link."""
        if self._listener is not None:
            # First in the listener's mailbox: it knows where to answer before any event.
            self._outbox.notify(ListenerAttached(self.actor_ref))
        if CONTROL in self._children:
            self._spawn(CONTROL)  # if it raises (can't start a thread): on_internal_error
        for subscribe in () if CONTROL in self._children else self._config.subscriptions:
            self._on_subscribe(subscribe)  # a subscription handle: started once all are Up

    def on_receive(self, message: Any) -> Any:
        """Dispatch by message type, then carry out what the pacer and outbox decided."""
        handler = self._HANDLERS.get(type(message))
        if handler is None:
            self._log.warning("unexpected message %r", type(message).__name__)
            return None
        result = handler(self, message)
        self._pump()
        return result

    def on_internal_error(self, exc: Exception) -> None:
        """A bug in a handler: the session fails as ``internal``, after the queued events."""
        self._log.error("internal error: %r", exc, exc_info=exc)
        error = ManagedSessionError("internal", f"supervisor: {exc!r}")
        error.__cause__ = exc
        self._fail("internal", error=error)
        self._pump()

    def on_crash(self, exc: BaseException | None) -> None:
        """Failing itself failed and pykka stopped the actor: nobody may wait forever."""
        error = ManagedSessionError("internal", f"supervisor crashed: {exc!r}")
        for reply in (self._started, self._pacer.reply,
                      self._shutdown.reply if self._shutdown else None):
            if reply is not None:
                fail_reply(reply, error)
        self._streams.fail_pending(error)
        for ref in self._children.alive():
            ref.stop(block=False)
        self.on_stop()

    def on_unhandled(self, message: Any) -> None:
        """A request left in the inbox at the end, or told after it: its sender
        waits on the request's ``reply``, answered as a stopped session answers."""
        reply = getattr(message, "reply", None)
        if isinstance(reply, pykka.Future):
            fail_reply(reply, ManagedSessionError("closed", "session shut down"))

    def on_stop(self) -> None:
        """No timer fires, and no take or continue waits, after the supervisor is gone."""
        self._children.cancel_timers()
        self._permits.close()
        closed = ManagedSessionError("closed", "session shut down")
        self._outbox.close_takers(closed)
        # Stopped from outside (pykka's stop_all), nothing else would answer it.
        self._end_continue_wait(closed)

    def _end_continue_wait(self, error: ManagedSessionError) -> None:
        """A continue handed over but not written yet: its sender's wait ends with ``error``."""
        if self._pacer.reply is not None:
            fail_reply(self._pacer.reply, error)
            self._pacer.reply = None

    def _pump(self) -> None:
        """Carry out what the pacer and the outbox decided after each message."""
        chunk = self._pacer.next_chunk()
        if chunk is not None and self._children.tell(CONTROL, WriteContinue(chunk)):
            self._pacer.handed()
        elif chunk is not None:
            self._pacer.not_written()
        for name, token in self._pacer.barriers_due():
            self._children.tell(name, Barrier(token))
        if self._pacer.completed_event is not None and self._pacer.completed_due():
            self._outbox.put(None, self._pacer.completed_event)
            self._completed_delivered = True
            if self._config.close_at_completed:
                self._children.tell_all(CloseLink())
        if self._completed_delivered and not self._children.alive():
            # Nothing more will come: a take still waiting (a next_event() with no
            # timeout) is answered now, as a take made from now on is (_on_take).
            self._outbox.close_takers(self._completed_error())
        if self._failure is None and self._listener is not None and (
                self._outbox.listener_lost or not self._listener.is_alive()):
            self._fail("closed", reason="the listener actor is gone")
        for name, credits in self._outbox.take_grants():
            self._children.tell(name, Grant(credits))
        self._streams.close_finished(CloseLink())

    # --- children ------

    def _spawn(self, name: str) -> None:
        child = self._children[name]
        child.generation += 1
        child.paused = False
        common: dict[str, Any] = {
            "supervisor": self.actor_ref, "generation": child.generation,
            "timing": self._timing, "scheduler": self._scheduler,
            "window": self._outbox.reset_link(name), "session_id": self._log.session_id,
            "sslopt": self._config.sslopt, "max_frame_size": self._config.max_frame_size,
        }
        if name == CONTROL:
            attach = None if self._info is None else Attach(self._info.session_id,
                                                            self._outbox.last_seq)
            if self._config.control_hub is not None:
                from .sub_control import SubControlActor  # a parallel session's port

                child.ref = SubControlActor.start(hub=self._config.control_hub, attach=attach,
                                                  **common)
                return
            child.ref = ControlActor.start(create=self._config.create, attach=attach,
                                           api_key=self._config.api_key, url=self._config.url,
                                           **common)
            return
        assert self._info is not None
        child.ref = SubscriptionActor.start(
            kind=name, addresses=self._outbox.addresses(name),
            replay_from=self._streams.replay_plan(name, child.generation, (
                self._config.create.start_slot if CONTROL in self._children else None)),
            url=pubsub_url(self._info.rpc_endpoint), **common)

    def _set_status(self, name: str, status: ConnectionStatus) -> None:
        # Completed is the last event the application gets: the links closing after it
        # change their status (status() shows it) without another event.
        if self._children.set_status(name, status) and not self._completed_delivered:
            self._outbox.put(None, ConnectionChanged(name, status))
            if self._started is not None and self._config.on_starting is not None:
                self._config.on_starting(ConnectionChanged(name, status))

    def _on_session_ready(self, message: SessionReady) -> None:
        if not self._children.current(CONTROL, message.generation):
            return
        self._info = message.info
        self._log.session_id = message.info.session_id
        self._log.info("session created; rpc endpoint %s", message.info.rpc_endpoint)
        if self._started is not None:
            self._started.set(message.info)
            self._started = None
        for subscribe in self._config.subscriptions:
            # Before the ReadyForContinue that follows: the first continue waits for them.
            self._on_subscribe(subscribe)

    def _on_child_up(self, message: ChildUp) -> None:
        name = message.name
        if not self._children.current(name, message.generation) or self._shutdown is not None:
            return
        child = self._children[name]
        self._permits.on_up(name, message.generation)
        if child.attempt:
            self._log.info("%s up again after restart %d", name, child.attempt)
        self._set_status(name, Up())
        self._pacer.link_up(name)
        if self._started is not None and (name == CONTROL or CONTROL not in self._children
                                          and self._children.all_up()):  # replay complete
            self._started.set(self._info)
            self._started = None
        child.timer = self._scheduler.schedule(self._config.policy.uptime_reset, self.actor_ref,
                                               UptimeCheck(name, message.generation))
        if name == CONTROL and self._pacer.control_resumed(message.generation):
            self._scheduler.schedule(self._timing.quiet_window, self.actor_ref,
                                     QuietCheck(message.generation))
        self._streams.report_gap(name)

    def _on_child_lost(self, message: ChildLost) -> None:
        name = message.name
        if name == CONTROL and TOO_BIG in message.reason and self._children.current(
                name, message.generation):
            refused = self._pacer.refused_on_the_wire(message.generation)
            if refused is not None:
                self._log.warning("the server refused the continue as too big (1009); it "
                                  "never ran and is not written again")
                self._outbox.put(None, Error(BacktestError("requestTooLarge", {
                    "request": type(refused).__name__, "close_code": 1009,
                    "reason": "the server closed the control connection as the frame was "
                              "too big: it never ran; send fewer or smaller transactions"})))
        if not self._link_ended(name, message.generation) or self._failure is not None:
            return
        decision = self._children.lost(
            name, message.reason, time.monotonic(),
            terminal=message.terminal or (message.hopeless_at_start and self._info is None),
            created=self._info is not None, create_written=message.request_written,
            completed=self._pacer.completed_event is not None and (
                name == CONTROL or self._pacer.completed_done))
        if isinstance(decision, GiveUp):
            self._fail(decision.kind, name, decision.reason)
        elif isinstance(decision, StayClosed):
            self._set_status(name, Closed())
        else:
            self._log.warning("%s lost (%s); restart %d in %.3fs", name, message.reason,
                              decision.attempt, decision.delay)
            self._set_status(name, Reconnecting(decision.attempt, decision.delay,
                                                message.reason))
            self._children[name].timer = self._scheduler.schedule(
                decision.delay, self.actor_ref, RestartChild(name, message.generation))

    def _on_restart(self, message: RestartChild) -> None:
        name, child = message.name, self._children[message.name]
        if (message.generation != child.generation or child.ref is not None
                or self._failure is not None or self._shutdown is not None):
            self._permits.release_token(name, message.permit)  # a grant come too late
        elif self._permits.may_spawn(name, message.generation, child.attempt, message.permit):
            self._spawn(name)

    def _on_child_closed(self, message: ChildClosed) -> None:
        if self._link_ended(message.name, message.generation):
            self._set_status(message.name, Closed())

    def _link_ended(self, name: str, generation: int) -> bool:
        """A link stopped: False when nothing is left to decide (stale, or shutting down)."""
        if not self._children.current(name, generation):
            return False
        self._permits.link_ended(name, generation)
        self._children[name].ref = None
        self._pacer.link_down(name)
        if self._shutdown is None:
            return True
        self._children[name].status = Closed()
        self._finish_shutdown()
        return False

    # --- subscriptions and events ------

    def _on_subscribe(self, message: SubscribeStream) -> None:
        self._streams.add(message, self._failure, self._shutdown is not None)
        self._spawn(message.kind)

    def _on_stream_items(self, message: StreamItems) -> None:
        if self._outbox.has_stream(message.name):
            self._outbox.stream_items(message.name, message.items,
                                      self._children.current(message.name, message.generation))

    def _on_control_events(self, message: ControlEvents) -> None:
        fresh, dropped = self._outbox.fresh_control(message.items)
        for received in fresh:
            event = None if received is None else self._pacer.absorb(received)
            if event is None:
                dropped += 1
                continue
            self._outbox.put(CONTROL, event)
            if isinstance(event, Error) and self._pacer.ends_session(event.error):
                # Delivered first, so the application sees what the server said.
                self._fail("control_failed", CONTROL, f"server error: {event.error}")
        if self._children.current(CONTROL, message.generation):
            self._outbox.consumed(CONTROL, dropped)
        for name in self._children:
            self._streams.report_gap(name)  # a gap held back by a running continue

    def _on_take(self, message: TakeEvents) -> None:
        closed = None
        if self._shutdown is not None:
            closed = ManagedSessionError("closed", "session shut down")
        elif self._pacer.completed_done and not self._children.alive():
            closed = self._completed_error()
        self._outbox.take(message.reply, message.limit, closed)

    @staticmethod
    def _completed_error() -> ManagedSessionError:
        return ManagedSessionError("closed", "session completed: nothing more will come")

    # --- continue ------

    def _on_send_continue(self, message: SendContinue) -> None:
        error = self._failure or self._pacer.refusal(self._shutdown is not None) or (
            None if CONTROL in self._children else ManagedSessionError(
                "closed", "a subscription handle has no control connection to continue on"))
        if error is None and isinstance(message.params, ContinueToParams):
            error = self._pacer.check_target(message.params, self._config.create.end_slot)
        if error is None:
            self._pacer.submit(message.params, message.reply)
            return
        self._stats["continues_refused"] += 1
        if message.reply is not None:
            fail_reply(message.reply, error)
            return
        self._log.warning("continue refused: %s", error)
        self._outbox.notify(ContinueRefused(message.params, error))

    def _on_quiet_check(self, message: QuietCheck) -> None:
        if not self._children.current(CONTROL, message.generation):
            return
        lost = self._pacer.quiet_window_over(message.generation, self._outbox.last_seq)
        if lost is not None:
            self._log.warning("continue lost in flight with the old connection (nothing "
                              "new %ss after re-attaching); %s", self._timing.quiet_window,
                              "written again" if lost.resent else "handed to the application")
            self._outbox.put(None, lost)

    # --- failure and shutdown ------

    def _fail(self, kind: ErrorKind, name: str = "", reason: str = "",
              error: ManagedSessionError | None = None) -> None:
        if self._failure is not None:
            return
        self._failure = error or ManagedSessionError(kind, f"{name}: {reason}" if name
                                                     else reason)
        # A starter waiting for this error raises it: logged once, by whoever catches it.
        self._log.log(logging.INFO if self._started else logging.ERROR, "session failed: %s",
                      self._failure)
        if name:
            self._set_status(name, Failed(reason))
        if self._started is not None:
            fail_reply(self._started, self._failure)
            self._started = None
        self._end_continue_wait(self._failure)
        self._pacer.abandon()
        self._streams.fail_pending(self._failure)
        self._outbox.fail(self._failure)
        self._children.tell_all(CloseLink())

    def _on_shutdown(self, message: Shutdown) -> None:
        if self._shutdown is not None:
            message.reply.set([])
            return
        self._shutdown = message
        self._children.cancel_timers()
        for name, child in self._children.items():
            if not self._children.tell(name, CloseLink(message.detach)):
                child.ref = None
        self._shutdown_timer = self._scheduler.schedule(
            self._timing.graceful_close, self.actor_ref, ShutdownDeadline())
        self._outbox.close_takers(ManagedSessionError("closed", "session shut down"))
        self._streams.fail_pending(ManagedSessionError("closed", "session shut down"))
        if self._started is not None:
            fail_reply(self._started, ManagedSessionError("cancelled", "shut down"))
            self._started = None
        self._finish_shutdown()

    def _finish_shutdown(self, forced: bool = False) -> None:
        if self._shutdown is None:
            return
        alive = self._children.alive()
        if alive and not forced:
            return
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
        if forced and alive:
            self._log.warning("%d connection(s) did not close in time; stopping them",
                              len(alive))
        try:
            self._shutdown.reply.set(alive)
        except Exception:  # noqa: BLE001 - answered already
            pass

    _HANDLERS: dict[type, Any] = {
        StreamItems: _on_stream_items,
        ControlEvents: _on_control_events,
        TakeEvents: _on_take,
        CancelTake: lambda self, m: self._outbox.cancel_take(m.reply),
        SendContinue: _on_send_continue,
        ContinueWritten: lambda self, m: self._children.current(CONTROL, m.generation)
        and self._pacer.written(m.generation, self._outbox.last_seq),
        ContinueNotWritten: lambda self, m: self._children.current(CONTROL, m.generation)
        and self._pacer.not_written(),
        SessionReady: _on_session_ready,
        ChildUp: _on_child_up,
        ChildLost: _on_child_lost,
        ChildClosed: _on_child_closed,
        BarrierReached: lambda self, m: self._children.current(m.name, m.generation)
        and self._pacer.barrier_reached(m.name, m.token),
        FramesMalformed: lambda self, m: self._stats.__setitem__(
            "malformed_frames", self._stats["malformed_frames"] + m.count),
        LinkFlow: lambda self, m: self._children.flow(m.name, m.generation, m.paused),
        RestartChild: _on_restart,
        UptimeCheck: lambda self, m: self._children.stayed_up(m.name, m.generation),
        GetStatus: lambda self, m: {n: c.status for n, c in self._children.items()},
        GetStats: lambda self, m: SessionStats.from_counters({
            **self._stats, **self._outbox.stats, **self._pacer.stats, **self._children.stats(),
            "held": self._outbox.queued, "last_seq": self._outbox.last_seq,
            "continue_state": self._pacer.state}),
        SubscribeStream: _on_subscribe,
        UnsubscribeStream: lambda self, m: self._streams.unsubscribe(
            m, self._failure, self._shutdown is not None),
        # None until the session is known (a create still pending, or rejected).
        GetCursor: lambda self, m: self._outbox.tracker and self._info and (
            self._outbox.tracker.cursor(self._info,
                                        self._pacer.pending_continue(self._outbox.last_seq))),
        Shutdown: _on_shutdown,
        ShutdownDeadline: lambda self, m: self._finish_shutdown(forced=True),
        QuietCheck: _on_quiet_check,
    }
