"""The consumer core: what every front door needs to consume one session.

The blocking facade, the asyncio facade and the handles differ only in how they
wait. Everything else lives here once, behind public methods, so that no front
door reaches into another:

* :class:`SessionOptions`: the keyword options of ``start``/``attach``, checked
  in one place, in the caller's thread, before anything connects (a bad value
  found later, inside an actor, would crash it and leave ``start`` waiting);
* :class:`SessionCore`: the supervisor and its scheduler, the events taken from
  the supervisor but not yet returned, the cursor the returned ones moved, and
  the continues handed over whose answers the cursor has not seen yet.

The core never waits on a future itself, except where every front door waits
the same way (an ``ask`` the supervisor answers at once, ``shutdown``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
import pykka

from protocol import (
    ContinueParams,
    ContinueToParams,
    CreateSession,
    ReconnectPolicy,
    Timing,
    backtest_ws_url,
)
from protocol.pubsub import StreamKind

from ..decisions.cursor import (
    Cursor,
    CursorTracker,
    Delta,
    ItemDelta,
    PendingContinue,
    SeqDelta,
)
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..decisions.stepping import DiscoveryTracker
from ..events import (
    ConnectionChanged,
    ConnectionStatus,
    ErrorKind,
    ManagedEvent,
    ManagedSessionError,
    SessionInfo,
)
from ..requests import GetCursor, GetStats, GetStatus, SendContinue, Shutdown, SubscribeStream
from ..runtime.connection import DEFAULT_MAX_FRAME_SIZE
from ..runtime.timers import Scheduler
from ..stats import SessionStats
from ..supervision.config import DEFAULT_MAX_QUEUE, SessionConfig
from ..supervision.supervisor import SessionSupervisor

# The delta of an event given back (``give_back``): it already moved the cursor.
GIVEN_BACK: Any = SeqDelta(-1)

# Extra time shutdown() allows beyond Timing.graceful_close for actors to end.
SHUTDOWN_MARGIN = 1.0
# The supervisor answers an ask at once (it never blocks); this bounds a bug.
ASK_TIMEOUT = 10.0
# The smallest max_queue accepted. Each link's window of undelivered frames is max_queue
# less a take batch, shared by three links; below 4 frames a window stalls start(): with
# 22 and less the session was never created ("no handshake answer"), from 23 up it
# starts. Refused up front instead, with margin.
MIN_MAX_QUEUE = 32
# How often a consumer waiting for another's take looks whether the session was shut down.
TAKE_LOCK_SLICE = 0.25


MAX_WAIT = threading.TIMEOUT_MAX  # the platform's longest wait (about 292 years)


def check_timeout(timeout: object) -> float | None:
    """A wait bound in seconds, or None; checked before any take or continue is handed over.

    A bad value found only inside the wait would leave the request with the
    supervisor, and its answer (a batch of events) with nobody.
    """
    if timeout is None:
        return None
    kind = type(timeout)
    # The common case first, in two tests: this runs once per event.
    # (No typing.cast here: it is a Python call at run time.)
    if (kind is float or kind is int) and 0 <= timeout <= MAX_WAIT:  # type: ignore[operator]
        return float(timeout)  # type: ignore[arg-type]
    # Anything else: say what is wrong with it.
    if type(timeout) is not float and type(timeout) is not int and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise TypeError(f"timeout: expected seconds (int or float) or None, got "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:  # NaN; math.isnan overflows on a huge int
        raise ValueError(f"timeout: expected a number of seconds >= 0, got {timeout!r}")
    # Past the platform's longest wait (about 292 years) is "no bound" in practice.
    return None if timeout > threading.TIMEOUT_MAX else float(timeout)


def start_error(exc: BaseException, attach: bool, bound: float) -> BaseException:
    """What a start (or attach) that did not get its session raises."""
    what: ErrorKind = "attach" if attach else "create"
    if isinstance(exc, pykka.Timeout | TimeoutError):
        return ManagedSessionError(what, f"no session within {bound:.0f}s")
    if isinstance(exc, ManagedSessionError) and attach and exc.kind != "cancelled":
        error = ManagedSessionError("attach", exc.reason)
        error.__cause__ = exc
        return error
    return exc


def with_deltas(batch: list[ManagedEvent]) -> list[tuple[ManagedEvent, Delta | None]]:
    """A taken batch's events, each with what returning it moves in the cursor."""
    deltas: list[Delta | None] = getattr(batch, "deltas", [None] * len(batch))
    return list(zip(batch, deltas, strict=True))


def _optional(expected: str, kind: type | tuple[type, ...]) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name}: expected {expected} or None, got "
                            f"{type(value).__name__}")
    return check


def _sslopt(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not all(isinstance(k, str) for k in value):
        raise TypeError("sslopt: expected str keys (ssl option names)")


def _int_at_least(minimum: int) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or value < minimum:
            raise ValueError(f"{attribute.name}: expected an integer >= {minimum}, got "
                             f"{value!r}")
    return check


def _positive_seconds(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) not in (int, float) or not 0 < value < float("inf")):
        raise ValueError(f"{attribute.name}: expected seconds > 0 or None, got {value!r}")


def _lost_continue(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("resend", "raise"):
        raise ValueError(f"on_lost_continue: expected 'resend' or 'raise', got {value!r}")


@attrs.frozen
class SessionOptions:
    """The options of ``start``/``attach`` (see ``ManagedBacktestSession.start`` for each
    one's meaning, default and cost), checked once, in the order users meet them."""

    policy: ReconnectPolicy | None = attrs.field(
        default=None, validator=_optional("ReconnectPolicy", ReconnectPolicy))
    timing: Timing | None = attrs.field(default=None, validator=_optional("Timing", Timing))
    listener: pykka.ActorRef[Any] | None = attrs.field(
        default=None, validator=_optional("a pykka.ActorRef", pykka.ActorRef))
    sslopt: dict[str, Any] | None = attrs.field(
        default=None, validator=[_optional("a dict of websocket-client ssl options", dict),
                                 _sslopt])
    max_frame_size: int = attrs.field(default=DEFAULT_MAX_FRAME_SIZE,
                                      validator=_int_at_least(1024))
    max_queue: int = attrs.field(default=DEFAULT_MAX_QUEUE,
                                 validator=_int_at_least(MIN_MAX_QUEUE))
    max_run_ahead: int = attrs.field(default=DEFAULT_MAX_RUN_AHEAD,
                                     validator=_int_at_least(1))
    on_lost_continue: LostContinuePolicy = attrs.field(default="resend",
                                                       validator=_lost_continue)
    on_starting: Callable[[ConnectionChanged], None] | None = None
    start_timeout: float | None = attrs.field(default=None, validator=_positive_seconds)
    # What the front doors set, never the user: no control link (a subscription
    # handle), streams subscribed as the session is named, Completed left open.
    control: bool = True
    subscriptions: tuple[SubscribeStream, ...] = ()
    close_at_completed: bool = True
    control_hub: Any = None  # a parallel session's sub-session (ParallelHub)

    @classmethod
    def of(cls, arguments: Mapping[str, Any], **fixed: Any) -> SessionOptions:
        """The options among a call's ``arguments`` (its ``locals()``): the public
        signatures name every keyword once, for ``help()``, and this reads them once."""
        names = {field.name for field in attrs.fields(cls)}
        return cls(**{k: v for k, v in arguments.items() if k in names}, **fixed)


def initial_subscriptions(transactions: Iterable[str], account_diffs: Iterable[str]
                          ) -> tuple[SubscribeStream, ...]:
    """``start``'s ``transactions``/``account_diffs`` as subscribe requests, checked here
    (named, base58) before anything is sent."""
    subscriptions: list[SubscribeStream] = []
    given: tuple[tuple[StreamKind, Iterable[str]], ...] = (
        ("transactions", transactions), ("account_diffs", account_diffs))
    for kind, addresses in given:
        if isinstance(addresses, str | bytes):
            raise TypeError(f"{kind}: expected a list of addresses, got one string")
        listed = tuple(addresses)
        if listed:
            subscriptions.append(SubscribeStream(kind, listed))
    return tuple(subscriptions)


def stream_requests(cursor: Cursor) -> list[SubscribeStream]:
    """A cursor's streams as subscribe requests (addresses checked on construction)."""
    return [SubscribeStream(cast(StreamKind, name), stream.addresses)
            for name, stream in cursor.streams.items()]


@attrs.define
class _Handed:
    """A continue handed over: its reply, what the cursor noted, what it held before."""

    reply: pykka.Future[None]
    noted: PendingContinue | None
    before: PendingContinue | None


class SessionCore:
    """One session as a consumer sees it; every front door is a thin wrapper of one."""

    def __init__(self, supervisor: pykka.ActorRef[Any], scheduler: Scheduler,
                 info: SessionInfo, timing: Timing, tracker: CursorTracker | None = None,
                 *, listener_mode: bool = False) -> None:
        self.supervisor = supervisor
        self.info = info
        self.timing = timing
        # Events go to a listener actor, not to a take.
        self.listener_mode = listener_mode
        # The cursor as the application has seen it: each returned event's delta.
        self.tracker = tracker or CursorTracker("", CreateSession(0, 0))
        # Taken from the supervisor in batches; bounded by TAKE_BATCH, counted in max_queue.
        self.taken: deque[tuple[ManagedEvent, Delta | None]] = deque()
        # Held by the consumer thread whose take is out, from asking to adding its batch:
        # one take at a time, as the asyncio door keeps it. With two takes out, the
        # thread of the later one could add its batch first, and a Completed in it
        # came out while the events of the batch before were still to be added.
        # An RLock: it can say whether this thread holds it (``_is_owned``, as
        # threading.Condition asks it), so an interrupt never leaves it held.
        # Taken and released through acquire_take() and release_take().
        self.take_lock = threading.RLock()
        # The last event returned, its delta not yet applied: applied by the next call
        # that reads the cursor (no call between removing an event and returning it).
        self._returned: tuple[ManagedEvent, Delta | None] | None = None
        self._last_cursor: Cursor | None = None  # a listener session's, kept at shutdown
        self._scheduler = scheduler
        self._closed = False
        self._lock = threading.Lock()  # makes shutdown() idempotent across threads
        # Continues handed to the supervisor whose answer is not applied yet.
        self._handed: list[_Handed] = []

    # --- starting ------

    @classmethod
    def begin(cls, url: str, api_key: str, create: CreateSession, resume: Cursor | None,
              started: pykka.Future[SessionInfo], options: SessionOptions
              ) -> tuple[SessionCore, float]:
        """Check the rest of the arguments, start the supervisor; ``started`` is answered
        with the session's identity (or its error) within the returned bound."""
        if not isinstance(url, str):
            raise TypeError(f"url: expected a str, got {type(url).__name__}")
        control_url = backtest_ws_url(url) if options.control else url
        if not isinstance(api_key, str):
            raise TypeError(f"api_key: expected a str, got {type(api_key).__name__}")
        if options.control and not api_key:
            raise ValueError("api_key: expected a non-empty string")
        timing = options.timing or Timing()
        scheduler = Scheduler()
        config = SessionConfig(
            url=control_url, api_key=api_key, create=create,
            policy=options.policy or ReconnectPolicy(), timing=timing,
            max_queue=options.max_queue, sslopt=options.sslopt,
            max_frame_size=options.max_frame_size, max_run_ahead=options.max_run_ahead,
            on_lost_continue=options.on_lost_continue, on_starting=options.on_starting,
            resume=resume, control=options.control, subscriptions=options.subscriptions,
            close_at_completed=options.close_at_completed, control_hub=options.control_hub)
        supervisor = SessionSupervisor.start(config, scheduler=scheduler, started=started,
                                             listener=options.listener)
        tracker = CursorTracker(control_url, create, resume)
        for message in options.subscriptions:
            tracker.subscribed(message.kind, message.addresses)
        info = SessionInfo("", "") if resume is None else resume.info
        core = cls(supervisor, scheduler, info, timing, tracker,
                   listener_mode=options.listener is not None)
        # Bound: the policy's outage budget, plus the attempt under way when it runs
        # out (connect and one handshake answer); past that a bug, never a wait.
        bound = config.policy.max_total + timing.connect + timing.handshake + SHUTDOWN_MARGIN
        return core, bound

    @classmethod
    def launch(cls, url: str, api_key: str, create: CreateSession, resume: Cursor | None,
               options: SessionOptions) -> SessionCore:
        """Start the supervisor and wait (blocking) until the session is known or failed."""
        started: pykka.ThreadingFuture[SessionInfo] = pykka.ThreadingFuture()
        core, bound = cls.begin(url, api_key, create, resume, started, options)
        if options.start_timeout is not None:
            bound = min(bound, options.start_timeout)
        try:
            core.info = started.get(timeout=bound)
        except BaseException as exc:
            # An attach interrupted (Ctrl-C) leaves the session on the server: never
            # closed by a resume that did not finish.
            core.shutdown(detach=resume is not None)
            raise start_error(exc, resume is not None, bound) from None
        return core

    @classmethod
    def resume(cls, url: str, api_key: str, cursor: Cursor, options: SessionOptions
               ) -> SessionCore:
        """Launch from a cursor and subscribe its streams again (with replay)."""
        subscribes = stream_requests(cursor)  # checked before connecting
        core = cls.launch(url, api_key, cursor.create, cursor, options)
        try:
            core.subscribe_again(subscribes)
        except BaseException:
            core.shutdown(detach=True)  # the session stays: the cursor still resumes it
            raise
        return core

    def subscribe_again(self, requests: list[SubscribeStream]) -> None:
        """Subscribe after an attach (the replay slots were seeded from the cursor)."""
        for message in requests:
            self.subscribe(message)

    def subscribe(self, message: SubscribeStream) -> None:
        self.ask(message)
        self.tracker.subscribed(message.kind, message.addresses)

    # --- what the supervisor answers at once ------

    def status(self) -> dict[str, ConnectionStatus]:
        result: dict[str, ConnectionStatus] = self.ask(GetStatus())
        return result

    def stats(self) -> SessionStats:
        result: SessionStats = self.ask(GetStats())
        return result

    def cursor(self) -> Cursor:
        """Right after the last event returned (a listener session: told)."""
        if self.listener_mode:
            if not self._closed:
                try:
                    answer: Any = self.supervisor.ask(GetCursor(), timeout=ASK_TIMEOUT)
                    self._last_cursor = answer
                except (pykka.ActorDeadError, pykka.Timeout):
                    pass
            if self._last_cursor is not None:
                return self._last_cursor
        self.apply_returned()
        self.settle_continues()
        return self.tracker.cursor(self.info)

    @property
    def delivered_seq(self) -> int | None:
        """The ``seqId`` of the last control event returned."""
        self.apply_returned()
        return self.tracker.last_seq

    @property
    def stepping(self) -> DiscoveryTracker:
        """Discoveries and rests as the application saw them (advance_to_discovery);
        the cursor's, so an attach steps on from the same point."""
        return self.tracker.stepping

    # --- events ------

    def apply_returned(self) -> None:
        """The event returned last counts in the cursor from now on."""
        returned, self._returned = self._returned, None
        if returned is not None:
            delta = returned[1]
            if type(delta) is ItemDelta:
                self.tracker.item_returned(delta)  # settled once per batch (add_taken)
            elif delta is not GIVEN_BACK:
                self.tracker.returned(*returned)

    def give_back(self, events: list[ManagedEvent]) -> None:
        """Events a step took and could not hand over (it raised: a timeout, a refused
        send): the next takes return them first. They already count in the cursor."""
        self.taken.extendleft((event, GIVEN_BACK) for event in reversed(events))

    def add_taken(self, batch: list[ManagedEvent]) -> None:
        """A take's batch arrived: its events wait here to be returned one by one."""
        self.tracker.settle_items()  # the items of the batches before, in bulk
        self.taken.extend(with_deltas(batch))

    def next_taken(self) -> ManagedEvent:
        """Return the first taken event; it moves the cursor at the next call.

        One C-level ``popleft`` removes it: an asynchronous exception (a signal
        handler's) cannot land between removing and returning (CPython runs them at
        Python calls and backward jumps), and two consumer threads never get the same
        event (reading ``[0]`` then deleting it gave one event twice and lost the next).
        ``IndexError`` when another consumer took the last one meanwhile.
        """
        if self._returned is not None:
            self.apply_returned()
        pair = self.taken.popleft()
        self._returned = pair
        return pair[0]

    def acquire_take(self, wait: float | None) -> bool:
        """Wait for the take lock, at most ``wait`` seconds (None: as long as the
        session lives); False when the time ran out.

        Taken in slices: a shut-down session raises ``closed`` within one, so a lock
        left held by a thread that died or was interrupted at the wrong instant never
        keeps another consumer waiting past the session.
        """
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            if self._closed:
                raise ManagedSessionError("closed", "session shut down")
            left = TAKE_LOCK_SLICE if deadline is None else min(
                TAKE_LOCK_SLICE, max(0.0, deadline - time.monotonic()))
            if self.take_lock.acquire(timeout=left):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def release_take(self) -> None:
        """Release the take lock if this thread holds it (asking the lock, so an
        interrupt between acquiring and noting it cannot leave it held)."""
        if self.take_lock._is_owned():  # type: ignore[attr-defined]  # (not in the stubs)
            self.take_lock.release()

    # --- continues ------

    def hand_over_continue(self, params: ContinueParams | ContinueToParams | None,
                           reply: pykka.Future[None]) -> None:
        """Check ``params``, note the continue as sent (write-ahead), hand it over; each
        front door waits for ``reply`` its own way."""
        params = ContinueParams() if params is None else params
        if not isinstance(params, ContinueParams | ContinueToParams):
            raise TypeError("params: expected ContinueParams or ContinueToParams, got "
                            f"{type(params).__name__}")
        # attrs validators ran at construction; this catches an instance changed since
        # (object.__setattr__), before the value can reach the wire.
        attrs.validate(params)
        self.apply_returned()
        self.settle_continues()
        # Write-ahead: a cursor taken from now on holds it as sent (the lost-continue
        # rule settles a continue that never reached the server).
        before = self.tracker.pending
        self.tracker.continue_sent(params)
        handed = _Handed(reply, self.tracker.pending, before)
        try:
            self.tell(SendContinue(params, reply))
        except ManagedSessionError:
            self.tracker.pending = before
            raise
        self._handed.append(handed)

    def settle_continues(self) -> None:
        """Apply the supervisor's answers to continues handed over, waited for or not.

        A refused continue was never sent: the cursor goes back to what it held
        before it, and so does any later continue's "before" (several may be
        refused in any order: asyncio tasks, a timed-out wait).
        """
        waiting: list[_Handed] = []
        for handed in self._handed:
            try:
                handed.reply.get(timeout=0)
            except pykka.Timeout:
                waiting.append(handed)  # not answered yet
                continue
            except ManagedSessionError as exc:
                if exc.kind in ("continue_outstanding", "closed", "invalid_argument"):
                    for other in self._handed:
                        if other.before is handed.noted:
                            other.before = handed.before
                    if self.tracker.pending is handed.noted:
                        self.tracker.pending = handed.before
                        # Never sent: the session rests where it did.
                        self.tracker.stepping.at_rest = handed.before is None
            except Exception:  # noqa: BLE001 - another failure: the session's, raised elsewhere
                pass
        # Rebuilt, not removed from: a second consumer thread settling at the same
        # time must not make this raise.
        self._handed = waiting

    # --- messages ------

    def tell(self, message: Any) -> None:
        if self._closed:
            raise ManagedSessionError("closed", "session shut down")
        try:
            self.supervisor.tell(message)
        except pykka.ActorDeadError:
            raise ManagedSessionError("closed", "session shut down") from None

    def ask(self, message: Any) -> Any:
        if self._closed:
            raise ManagedSessionError("closed", "session shut down")
        try:
            return self.supervisor.ask(message, timeout=ASK_TIMEOUT)
        except pykka.ActorDeadError:
            raise ManagedSessionError("closed", "session shut down") from None
        except pykka.Timeout:
            raise ManagedSessionError("internal", f"the session did not answer "
                                      f"{type(message).__name__} within {ASK_TIMEOUT}s") from None

    # --- shutdown ------

    def shutdown(self, *, detach: bool = False) -> None:
        """Close everything; idempotent, never raises, bounded by graceful_close + margin."""
        with self._lock:
            if self._closed:
                return
            if self.listener_mode:
                try:
                    self.cursor()  # kept: cursor() still answers after the supervisor is gone
                except Exception:  # noqa: BLE001 - shutdown never raises
                    pass
            self._closed = True
        deadline = time.monotonic() + self.timing.graceful_close + SHUTDOWN_MARGIN
        try:
            reply: pykka.ThreadingFuture[list[pykka.ActorRef[Any]]] = pykka.ThreadingFuture()
            self.supervisor.tell(Shutdown(reply, detach))
            leftovers = reply.get(timeout=max(0.1, deadline - time.monotonic()))
            for ref in leftovers:
                ref.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - shutdown never raises
            pass
        try:
            self.supervisor.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001
            pass
        self._scheduler.stop(timeout=max(0.1, deadline - time.monotonic()))
