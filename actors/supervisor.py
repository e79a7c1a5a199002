"""SessionSupervisor: every retry decision, every cursor, the one outbox.

Erlang/Akka backoff-supervisor style. The connection actors only connect,
handshake, run and report; this actor:

* restarts a lost child after ``ReconnectPolicy.delay(attempt)`` in *resume
  mode* (control: attach with the last ``seqId``; subscription: subscribe with
  ``replayFromSlot``), and escalates to ``Failed`` when the failure is terminal
  or the budget is spent; a child that stays Up for ``uptime_reset`` starts
  afresh;
* delivers every event once: control events deduplicated by ``seqId``,
  subscription items by key (transaction signature; diff (signature, account));
* gates ``continue`` on every child being Up and never writes one twice;
* holds ``Completed`` until every subscription passed a drain barrier;
* bounds memory: each connection may hold ``max_queue // 3`` undelivered frames
  (credits); a credit comes back when its event leaves the client.

Ordering: each stream is delivered in slot order, across its addresses and
across reconnects (the subscription link sorts a resume's replay, see
:mod:`actors.subscription`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import attrs
import pykka

from protocol import Attach, ContinueParams, CreateSession, ReconnectPolicy, Timing, pubsub_url
from protocol import Completed as WireCompleted
from protocol import Error as WireError
from protocol import ReadyForContinue as WireReady
from protocol import SlotNotification as WireSlot
from protocol import Status as WireStatus
from protocol.messages import Response
from protocol.pubsub import PUBSUB_BUFFER_SLOTS, StreamKind

from .connection import DEFAULT_MAX_FRAME_SIZE
from .control import (
    CONTROL,
    ContinueNotWritten,
    ContinueWritten,
    ControlActor,
    ControlEvents,
    SessionReady,
    WriteContinue,
)
from .events import (
    Closed,
    Completed,
    Connecting,
    ConnectionChanged,
    ConnectionStatus,
    Error,
    ErrorKind,
    Failed,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    Reconnecting,
    SessionFailed,
    SessionInfo,
    Slot,
    Status,
    Transaction,
    Up,
)
from .link import ChildClosed, ChildLost, ChildUp, CloseLink, FramesMalformed, Grant, LinkFlow
from .logs import SessionLogger
from .subscription import Barrier, BarrierReached, StreamItems, SubscriptionActor
from .timers import Scheduler, TimerHandle

DEFAULT_MAX_QUEUE = 4096
LINKS_PER_SESSION = 3  # control + transactions + account diffs
# Events the blocking facade may take per round trip. They leave the supervisor's
# outbox, so the links' windows share max_queue minus this (memory stays bounded).
TAKE_BATCH = 128
PRUNE_EVERY_SLOTS = 16  # dedup keys are pruned in steps, not on every batch

# --- public messages (application actors tell/ask these) -------------------------------


@attrs.frozen
class SendContinue:
    """Hand a continue to the session; ``reply`` (optional) resolves once it is written."""

    params: ContinueParams
    reply: pykka.Future[None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class GetStatus:
    """``ask`` it: a dict of connection name -> ConnectionStatus."""


@attrs.frozen
class GetStats:
    """``ask`` it: counters (reconnects, duplicates dropped, malformed frames, ...)."""


@attrs.frozen
class SubscribeStream:
    """``ask`` it: start a subscription link for ``kind`` over ``addresses``."""

    kind: StreamKind
    addresses: tuple[str, ...]


@attrs.frozen
class TakeEvents:
    """Complete ``reply`` with up to ``limit`` events (at least one) or the session's error.

    Taking a batch per round trip instead of one event is what keeps the
    facade from being the slowest hop.
    """

    reply: pykka.Future[list[ManagedEvent]] = attrs.field(eq=False)
    limit: int = 1


@attrs.frozen
class CancelTake:
    """``ask`` it: True if the take was withdrawn before events were put in it."""

    reply: pykka.Future[list[ManagedEvent]] = attrs.field(eq=False)


@attrs.frozen
class Shutdown:
    """Close everything; ``reply`` resolves with the child refs once they have stopped."""

    reply: pykka.Future[list[pykka.ActorRef[Any]]] = attrs.field(eq=False)


# --- timer messages -----------------------------------------------------------------------


@attrs.frozen
class RestartChild:
    name: str
    generation: int


@attrs.frozen
class UptimeCheck:
    name: str
    generation: int


@attrs.frozen
class ShutdownDeadline:
    pass


@attrs.frozen
class StallCheck:
    """A continue written on a connection that died: has anything come since the restart?"""

    generation: int
    last_seq: int | None


# --- private state ---------------------------------------------------------------------------


@attrs.define
class _Child:
    name: str
    ref: pykka.ActorRef[Any] | None = None
    generation: int = 0
    status: ConnectionStatus = attrs.field(factory=Connecting)
    attempt: int = 0
    outage_started: float | None = None
    restarts: int = 0
    timer: TimerHandle | None = None
    ungranted: int = 0  # credits owed to the current connection, sent in batches
    barrier: bytes | None = None  # drain token sent to a subscription
    drained: bool = False
    paused: bool = False  # its reader is out of credits (the application is behind)


@attrs.define
class _Stream:
    addresses: tuple[str, ...]
    last_slot: dict[str, int] = attrs.field(factory=dict)  # resume cursor per address
    seen: dict[Any, int] = attrs.field(factory=dict)  # delivered key -> slot
    max_slot: int = -1
    pruned_below: int = -1


class _FailureMarker:
    """Sits last in the outbox: the application gets every earlier event first."""

    def __init__(self, error: ManagedSessionError) -> None:
        self.error = error


def _to_event(msg: Response) -> ManagedEvent | None:
    if isinstance(msg, WireSlot):
        return Slot(msg.slot)
    if isinstance(msg, WireStatus):
        return Status(msg.status)
    if isinstance(msg, WireReady):
        return ReadyForContinue()
    if isinstance(msg, WireCompleted):
        return Completed(msg.summary)
    if isinstance(msg, WireError):
        return Error(msg.error)
    return None  # unknown methods and stray lifecycle answers: nothing to deliver


def _fail_exception(reply: pykka.Future[Any], error: BaseException) -> None:
    try:
        reply.set_exception((type(error), error, None))
    except Exception:  # noqa: BLE001 - already completed (e.g. a withdrawn take)
        pass


class SessionSupervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, *, url: str, api_key: str, create: CreateSession,
                 policy: ReconnectPolicy, timing: Timing, scheduler: Scheduler,
                 started: pykka.Future[SessionInfo], listener: pykka.ActorRef[Any] | None,
                 max_queue: int, sslopt: dict[str, Any] | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__()
        self._url = url
        self._api_key = api_key
        self._create = create
        self._policy = policy
        self._timing = timing
        self._scheduler = scheduler
        self._started: pykka.Future[SessionInfo] | None = started
        self._listener = listener
        self._window = max(1, (max_queue - min(TAKE_BATCH, max_queue // 2))
                           // LINKS_PER_SESSION)
        self._sslopt = sslopt
        self._max_frame_size = max_frame_size
        self._log = SessionLogger("supervisor")
        self._info: SessionInfo | None = None
        self._children: dict[str, _Child] = {CONTROL: _Child(CONTROL)}
        self._streams: dict[str, _Stream] = {}
        self._last_seq: int | None = None
        self._outbox: deque[tuple[str | None, ManagedEvent | _FailureMarker]] = deque()
        self._held: dict[str, int] = {}
        self._takers: deque[TakeEvents] = deque()
        self._continue_state = "idle"  # idle | pending | handed | outstanding
        self._continue: SendContinue | None = None
        self._completed: Completed | None = None
        self._completed_delivered = False
        self._failure: ManagedSessionError | None = None
        self._shutdown: Shutdown | None = None
        self._shutdown_timer: TimerHandle | None = None
        self._stats = {"duplicates_dropped": 0, "malformed_frames": 0, "continues_written": 0,
                       "events_delivered": 0, "peak_held": 0, "continue_stalls": 0}

    # --- pykka ------

    def on_start(self) -> None:
        self._spawn(CONTROL)

    def on_receive(self, message: Any) -> Any:  # noqa: C901 - one dispatch table
        if isinstance(message, StreamItems):
            self._on_stream_items(message)
        elif isinstance(message, ControlEvents):
            self._on_control_events(message)
        elif isinstance(message, TakeEvents):
            self._on_take(message)
        elif isinstance(message, CancelTake):
            return self._on_cancel_take(message.reply)
        elif isinstance(message, SendContinue):
            self._on_send_continue(message)
        elif isinstance(message, ContinueWritten):
            self._on_continue_written(message)
        elif isinstance(message, ContinueNotWritten):
            if message.generation == self._child(CONTROL).generation:
                self._revert_continue()
        elif isinstance(message, SessionReady):
            self._on_session_ready(message)
        elif isinstance(message, ChildUp):
            self._on_child_up(message)
        elif isinstance(message, ChildLost):
            self._on_child_lost(message)
        elif isinstance(message, ChildClosed):
            self._on_child_closed(message)
        elif isinstance(message, BarrierReached):
            self._on_barrier(message)
        elif isinstance(message, FramesMalformed):
            self._stats["malformed_frames"] += message.count
        elif isinstance(message, LinkFlow):
            if message.generation == self._child(message.name).generation:
                self._child(message.name).paused = message.paused
        elif isinstance(message, RestartChild):
            self._on_restart(message)
        elif isinstance(message, UptimeCheck):
            self._on_uptime_check(message)
        elif isinstance(message, GetStatus):
            return {name: child.status for name, child in self._children.items()}
        elif isinstance(message, GetStats):
            return self._snapshot_stats()
        elif isinstance(message, SubscribeStream):
            self._on_subscribe(message)
        elif isinstance(message, Shutdown):
            self._on_shutdown(message)
        elif isinstance(message, ShutdownDeadline):
            self._finish_shutdown(forced=True)
        elif isinstance(message, StallCheck):
            self._on_stall_check(message)
        else:
            self._log.warning("unexpected message %r", type(message).__name__)
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """A bug here must not leave anyone waiting forever: fail every waiter, stop links."""
        error = ManagedSessionError("closed", f"supervisor crashed: {exception_value!r}")
        self._log.error("%s", error)
        if self._started is not None:
            _fail_exception(self._started, error)
        if self._continue is not None and self._continue.reply is not None:
            _fail_exception(self._continue.reply, error)
        if self._shutdown is not None:
            _fail_exception(self._shutdown.reply, error)
        for child in self._children.values():
            if child.ref is not None:
                child.ref.stop(block=False)
        self.on_stop()

    def on_stop(self) -> None:
        for child in self._children.values():
            if child.timer:
                child.timer.cancel()
        closed = ManagedSessionError("closed", "session shut down")
        for taker in self._takers:
            _fail_exception(taker.reply, closed)
        self._takers.clear()

    # --- children ------

    def _child(self, name: str) -> _Child:
        return self._children[name]

    def _spawn(self, name: str) -> None:
        child = self._child(name)
        child.generation += 1
        child.ungranted = 0
        child.barrier = None
        child.drained = False
        child.paused = False
        common: dict[str, Any] = {
            "supervisor": self.actor_ref, "generation": child.generation,
            "timing": self._timing, "scheduler": self._scheduler,
            # Events of this stream still in the outbox count against the new window.
            "window": max(1, self._window - self._held.get(name, 0)),
            "session_id": self._log.session_id, "sslopt": self._sslopt,
            "max_frame_size": self._max_frame_size,
        }
        if name == CONTROL:
            attach = None if self._info is None else Attach(self._info.session_id,
                                                            self._last_seq)
            child.ref = ControlActor.start(create=self._create, attach=attach,
                                           api_key=self._api_key, url=self._url, **common)
            return
        assert self._info is not None
        stream = self._streams[name]
        replay: dict[str, int] = {}
        if child.generation > 1:
            # An address with nothing delivered yet replays the whole server buffer.
            replay = {a: stream.last_slot.get(a, self._create.start_slot)
                      for a in stream.addresses}
        child.ref = SubscriptionActor.start(
            kind=name, addresses=stream.addresses, replay_from=replay,
            url=pubsub_url(self._info.rpc_endpoint), **common)

    def _tell_child(self, name: str, message: Any) -> bool:
        ref = self._child(name).ref
        if ref is None:
            return False
        try:
            ref.tell(message)
            return True
        except pykka.ActorDeadError:
            return False

    def _set_status(self, name: str, status: ConnectionStatus) -> None:
        child = self._child(name)
        if child.status == status:
            return
        child.status = status
        self._deliver(None, ConnectionChanged(name, status))

    def _on_session_ready(self, message: SessionReady) -> None:
        if message.generation != self._child(CONTROL).generation:
            return
        self._info = message.info
        self._log.session_id = message.info.session_id
        self._log.info("session created; rpc endpoint %s", message.info.rpc_endpoint)
        if self._started is not None:
            self._started.set(message.info)
            self._started = None

    def _on_child_up(self, message: ChildUp) -> None:
        child = self._child(message.name)
        if message.generation != child.generation or self._shutdown is not None:
            return
        if child.attempt:
            self._log.info("%s up again after restart %d", message.name, child.attempt)
        self._set_status(message.name, Up())
        child.timer = self._scheduler.schedule(self._policy.uptime_reset, self.actor_ref,
                                               UptimeCheck(message.name, message.generation))
        if message.name == CONTROL and self._continue_state == "outstanding":
            self._scheduler.schedule(self._timing.handshake, self.actor_ref,
                                     StallCheck(message.generation, self._last_seq))
        self._try_hand_continue()
        if self._completed is not None:
            self._drain()

    def _on_uptime_check(self, message: UptimeCheck) -> None:
        child = self._child(message.name)
        if message.generation == child.generation and isinstance(child.status, Up):
            child.attempt = 0
            child.outage_started = None

    def _on_child_lost(self, message: ChildLost) -> None:
        name = message.name
        child = self._child(name)
        if message.generation != child.generation:
            return
        child.ref = None
        if name == CONTROL:
            self._revert_continue()
        if self._shutdown is not None:
            child.status = Closed()
            self._finish_shutdown()
            return
        if self._failure is not None:
            return
        if name == CONTROL and self._info is None and (message.terminal
                                                       or message.request_written):
            self._fail("create", CONTROL, message.reason)
            return
        if message.terminal:
            self._fail(self._failure_kind(name), name, message.reason)
            return
        if self._completed is not None and (name == CONTROL or child.drained):
            self._set_status(name, Closed())  # nothing left to fetch on this link
            return
        now = time.monotonic()
        attempt = child.attempt + 1
        outage_started = child.outage_started if child.outage_started is not None else now
        if self._policy.exhausted(attempt, now - outage_started):
            self._fail(self._failure_kind(name), name,
                       f"{message.reason}; reconnect budget spent after {attempt - 1} "
                       f"restarts in {now - outage_started:.1f}s")
            return
        delay = self._policy.delay(attempt)
        child.attempt, child.outage_started = attempt, outage_started
        child.restarts += 1
        self._log.warning("%s lost (%s); restart %d in %.3fs", name, message.reason, attempt,
                          delay)
        self._set_status(name, Reconnecting(attempt, delay, message.reason))
        child.timer = self._scheduler.schedule(delay, self.actor_ref,
                                               RestartChild(name, child.generation))

    def _failure_kind(self, name: str) -> ErrorKind:
        if name != CONTROL:
            return "subscription_failed"
        return "control_failed" if self._info is not None else "create"

    def _on_restart(self, message: RestartChild) -> None:
        child = self._child(message.name)
        if (message.generation == child.generation and child.ref is None
                and self._failure is None and self._shutdown is None):
            self._spawn(message.name)

    def _on_child_closed(self, message: ChildClosed) -> None:
        child = self._child(message.name)
        if message.generation != child.generation:
            return
        child.ref = None
        if self._shutdown is not None:
            child.status = Closed()
            self._finish_shutdown()
        else:
            self._set_status(message.name, Closed())

    # --- subscriptions ------

    def _on_subscribe(self, message: SubscribeStream) -> None:
        if self._failure is not None:
            raise self._failure
        if self._shutdown is not None or self._completed is not None:
            raise ManagedSessionError("closed", "session is over")
        if message.kind in self._children:
            raise ValueError(f"{message.kind}: already subscribed on this session")
        self._children[message.kind] = _Child(message.kind)
        self._streams[message.kind] = _Stream(message.addresses)
        self._deliver(None, ConnectionChanged(message.kind, Connecting()))
        self._spawn(message.kind)

    def _on_stream_items(self, message: StreamItems) -> None:
        stream = self._streams[message.name]
        dropped = 0
        for address, event in message.items:
            if event.slot > stream.last_slot.get(address, -1):
                stream.last_slot[address] = event.slot
            key: Any = event.signature if isinstance(event, Transaction) else (
                event.signature, event.account)
            if key in stream.seen:
                dropped += 1
                continue
            stream.seen[key] = event.slot
            if event.slot > stream.max_slot:
                stream.max_slot = event.slot
            self._deliver(message.name, event)
        self._stats["duplicates_dropped"] += dropped
        horizon = stream.max_slot - PUBSUB_BUFFER_SLOTS - 1
        if horizon >= stream.pruned_below + PRUNE_EVERY_SLOTS:
            # A replay reaches back at most the server's buffer: older keys never return.
            stream.seen = {k: s for k, s in stream.seen.items() if s >= horizon}
            stream.pruned_below = horizon
        if message.generation == self._child(message.name).generation:
            self._give_back(message.name, dropped)

    # --- control events ------

    def _on_control_events(self, message: ControlEvents) -> None:
        current = message.generation == self._child(CONTROL).generation
        dropped = 0
        for seq, msg in message.items:
            if seq is not None:
                if self._last_seq is not None and seq <= self._last_seq:
                    dropped += 1
                    self._stats["duplicates_dropped"] += 1
                    continue
                self._last_seq = seq
            event = _to_event(msg)
            if event is None:
                dropped += 1
                continue
            if isinstance(event, ReadyForContinue | Completed):
                if self._continue_state == "outstanding":
                    self._continue_state = "idle"
                    self._continue = None
            if isinstance(event, Completed):
                dropped += 1  # held aside, not in the outbox
                self._completed = event
                self._drain()
                continue
            self._deliver(CONTROL, event)
        if current:
            self._give_back(CONTROL, dropped)

    def _drain(self) -> None:
        """Deliver ``Completed`` once every subscription passed a drain barrier."""
        if self._completed_delivered or self._completed is None:
            return
        waiting = False
        for name, child in self._children.items():
            if name == CONTROL or child.drained or isinstance(child.status, Closed):
                continue
            waiting = True
            if child.barrier is None and isinstance(child.status, Up):
                child.barrier = f"drain-{child.generation}".encode()
                self._tell_child(name, Barrier(child.barrier))
        if waiting:
            return
        self._completed_delivered = True
        self._deliver(None, self._completed)  # its credit went back when it was held
        for name in self._children:
            self._tell_child(name, CloseLink())

    def _on_barrier(self, message: BarrierReached) -> None:
        child = self._child(message.name)
        if message.generation == child.generation and message.token == child.barrier:
            child.drained = True
            self._drain()

    # --- continue ------

    def _on_send_continue(self, message: SendContinue) -> None:
        error: ManagedSessionError | None = self._failure
        if error is None and (self._shutdown is not None or self._completed is not None):
            error = ManagedSessionError("closed", "session is over")
        if error is None and self._continue_state != "idle":
            error = ManagedSessionError("continue_outstanding",
                                        "the previous continue has not been answered yet")
        if error is not None:
            if message.reply is not None:
                _fail_exception(message.reply, error)
            else:
                self._log.error("continue refused: %s", error)
            return
        self._continue_state = "pending"
        self._continue = message
        self._try_hand_continue()

    def _try_hand_continue(self) -> None:
        if self._continue_state != "pending" or self._continue is None:
            return
        if not all(isinstance(c.status, Up) for c in self._children.values()):
            return  # gated: written once every connection is Up again
        if self._tell_child(CONTROL, WriteContinue(self._continue.params)):
            self._continue_state = "handed"

    def _on_continue_written(self, message: ContinueWritten) -> None:
        if message.generation != self._child(CONTROL).generation:
            return
        if self._continue_state == "handed" and self._continue is not None:
            self._continue_state = "outstanding"
            self._stats["continues_written"] += 1
            if self._continue.reply is not None:
                self._continue.reply.set(None)

    def _on_stall_check(self, message: StallCheck) -> None:
        """A written continue is never re-sent (that could advance twice). When nothing
        at all has come from the session for ``Timing.handshake`` after a reconnect,
        the continue most likely died in flight with the old connection: say so."""
        if (message.generation == self._child(CONTROL).generation
                and self._continue_state == "outstanding" and self._last_seq == message.last_seq):
            self._stats["continue_stalls"] += 1
            self._log.warning(
                "no answer to the outstanding continue %ss after reconnecting: it was written "
                "on a connection that died and may never have reached the server; it is not "
                "re-sent (that could advance the session twice)", self._timing.handshake)

    def _revert_continue(self) -> None:
        """Handed but not confirmed written: the link died first, so it was not written."""
        if self._continue_state == "handed":
            self._continue_state = "pending"

    # --- the outbox ------

    def _deliver(self, source: str | None, event: ManagedEvent | _FailureMarker) -> None:
        if self._listener is not None:
            try:
                if isinstance(event, _FailureMarker):
                    self._listener.tell(SessionFailed(event.error))
                else:
                    self._listener.tell(event)
            except pykka.ActorDeadError:
                self._log.warning("listener is gone; event dropped")
            self._delivered(source, 1)
            return
        if self._takers and not self._outbox:
            self._hand(self._takers.popleft(), source, event)
            return
        self._outbox.append((source, event))
        if source is not None:
            self._held[source] = self._held.get(source, 0) + 1
        self._stats["peak_held"] = max(self._stats["peak_held"], len(self._outbox))

    def _hand(self, taker: TakeEvents, source: str | None,
              event: ManagedEvent | _FailureMarker) -> None:
        if isinstance(event, _FailureMarker):
            self._outbox.appendleft((source, event))  # every later take fails the same way
            _fail_exception(taker.reply, event.error)
            return
        taker.reply.set([event])
        self._delivered(source, 1)

    def _delivered(self, source: str | None, count: int) -> None:
        self._stats["events_delivered"] += count
        if source is not None:
            self._give_back(source, count)

    def _on_take(self, taker: TakeEvents) -> None:
        if not self._outbox:
            if self._shutdown is not None:
                _fail_exception(taker.reply, ManagedSessionError("closed", "session shut down"))
            else:
                self._takers.append(taker)
            return
        if isinstance(self._outbox[0][1], _FailureMarker):
            _fail_exception(taker.reply, self._outbox[0][1].error)
            return
        batch: list[ManagedEvent] = []
        returned: dict[str, int] = {}
        while self._outbox and len(batch) < taker.limit:
            source, event = self._outbox[0]
            if isinstance(event, _FailureMarker):
                break  # the next take gets the error, after these events
            self._outbox.popleft()
            batch.append(event)
            if source is not None:
                self._held[source] -= 1
                returned[source] = returned.get(source, 0) + 1
        taker.reply.set(batch)
        self._stats["events_delivered"] += len(batch)
        for source, count in returned.items():
            self._give_back(source, count)

    def _on_cancel_take(self, reply: pykka.Future[list[ManagedEvent]]) -> bool:
        for taker in self._takers:
            if taker.reply is reply:
                self._takers.remove(taker)
                return True
        return False

    def _give_back(self, name: str, credits: int) -> None:
        """Return flow-control credits in batches: one tell per window/8 events."""
        child = self._children.get(name)
        if child is None or credits <= 0:
            return
        child.ungranted += credits
        if child.ungranted >= max(1, self._window // 8) or self._held.get(name, 0) == 0:
            if self._tell_child(name, Grant(child.ungranted)):
                child.ungranted = 0

    # --- failure and shutdown ------

    def _fail(self, kind: ErrorKind, name: str, reason: str) -> None:
        self._failure = ManagedSessionError(kind, f"{name}: {reason}")
        self._log.error("session failed: %s", self._failure)
        self._set_status(name, Failed(reason))
        if self._started is not None:
            _fail_exception(self._started, self._failure)
            self._started = None
        if self._continue is not None and self._continue.reply is not None:
            _fail_exception(self._continue.reply, self._failure)
        self._continue, self._continue_state = None, "idle"
        self._deliver(None, _FailureMarker(self._failure))
        for child_name in self._children:
            self._tell_child(child_name, CloseLink())

    def _on_shutdown(self, message: Shutdown) -> None:
        if self._shutdown is not None:
            message.reply.set([])
            return
        self._shutdown = message
        for name, child in self._children.items():
            if child.timer:
                child.timer.cancel()
            if not self._tell_child(name, CloseLink()):
                child.ref = None
        self._shutdown_timer = self._scheduler.schedule(
            self._timing.graceful_close, self.actor_ref, ShutdownDeadline())
        closed = ManagedSessionError("closed", "session shut down")
        while self._takers:
            _fail_exception(self._takers.popleft().reply, closed)
        if self._started is not None:
            _fail_exception(self._started, ManagedSessionError("cancelled", "shut down"))
            self._started = None
        self._finish_shutdown()

    def _finish_shutdown(self, forced: bool = False) -> None:
        if self._shutdown is None:
            return
        alive = [c.ref for c in self._children.values() if c.ref is not None]
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

    def _snapshot_stats(self) -> dict[str, Any]:
        return {
            **self._stats,
            "held": len(self._outbox),
            "reconnects": {name: c.restarts for name, c in self._children.items()},
            "paused": {name: c.paused for name, c in self._children.items()},
            "last_seq": self._last_seq,
            "continue_state": self._continue_state,
        }
