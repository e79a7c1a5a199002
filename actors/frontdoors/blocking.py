"""ManagedBacktestSession: the blocking facade for plain (non-actor) code.

``start`` creates a session; ``attach`` resumes one from a :class:`~actors.decisions.cursor.Cursor`
(``cursor()``, taken at any time, names the point right after the last event
this facade *returned*; events taken from the supervisor but not yet returned
do not count).

It owns the session's scheduler thread and supervisor actor and only talks to
the supervisor by messages: a blocking call is a message carrying a pykka
future, and the facade waits on that future.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import attrs
import pykka

from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing, backtest_ws_url
from protocol.pubsub import StreamKind

from ..decisions.cursor import Cursor, CursorTracker, Delta, PendingContinue, check_cursor
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import (
    Completed,
    ConnectionChanged,
    ConnectionStatus,
    ContinueLost,
    ErrorKind,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    SessionInfo,
)
from ..requests import (
    CancelTake,
    GetCursor,
    GetStats,
    GetStatus,
    SendContinue,
    Shutdown,
    SubscribeStream,
    TakeEvents,
    UnsubscribeStream,
)
from ..runtime.connection import DEFAULT_MAX_FRAME_SIZE
from ..runtime.timers import Scheduler
from ..stats import SessionStats
from ..supervision.config import DEFAULT_MAX_QUEUE, LINKS_PER_SESSION, TAKE_BATCH, SessionConfig
from ..supervision.supervisor import SessionSupervisor

# Extra time shutdown() allows beyond Timing.graceful_close for actors to end.
SHUTDOWN_MARGIN = 1.0
# The supervisor answers an ask at once (it never blocks); this bounds a bug.
ASK_TIMEOUT = 10.0
# Tries at withdrawing an interrupted take when interrupts keep coming (a held Ctrl-C).
WITHDRAW_ATTEMPTS = 5


def _check_timeout(timeout: object) -> float | None:
    """A wait bound in seconds, or None; checked before any take or continue is handed over.

    A bad value found only inside the wait would leave the request with the
    supervisor, and its answer (a batch of events) with nobody.
    """
    if timeout is None:
        return None
    # Exact types first: this runs once per event.
    if type(timeout) is not float and type(timeout) is not int and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise TypeError(f"timeout: expected seconds (int or float) or None, got "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:  # NaN; math.isnan overflows on a huge int
        raise ValueError(f"timeout: expected a number of seconds >= 0, got {timeout!r}")
    # Past the platform's longest wait (about 292 years) is "no bound" in practice.
    return None if timeout > threading.TIMEOUT_MAX else float(timeout)


@attrs.define
class _Handed:
    """A continue handed over: its reply, what the cursor noted, what it held before."""

    reply: pykka.Future[None]
    noted: PendingContinue | None
    before: PendingContinue | None


def _start_error(exc: BaseException, attach: bool, bound: float) -> BaseException:
    """What a start (or attach) that did not get its session raises."""
    what: ErrorKind = "attach" if attach else "create"
    if isinstance(exc, pykka.Timeout | TimeoutError):
        return ManagedSessionError(what, f"no session within {bound:.0f}s")
    if isinstance(exc, ManagedSessionError) and attach and exc.kind != "cancelled":
        error = ManagedSessionError("attach", exc.reason)
        error.__cause__ = exc
        return error
    return exc


def _with_deltas(batch: list[ManagedEvent]) -> list[tuple[ManagedEvent, Delta | None]]:
    deltas: list[Delta | None] = getattr(batch, "deltas", [None] * len(batch))
    return list(zip(batch, deltas, strict=True))


def _check_optional(field: str, value: object, kind: type | tuple[type, ...],
                    expected: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{field}: expected {expected} or None, got {type(value).__name__}")


class ManagedBacktestSession:
    """A created backtest session whose connections are kept alive for you.

    Make one with :meth:`start` (or :meth:`attach` to resume); use it as a context
    manager, or call :meth:`shutdown`. Read events with :meth:`next_event`,
    ``for event in session`` or :meth:`run` (the ready -> continue loop done for
    you); answer each ``ReadyForContinue`` with :meth:`send_continue`. Subscribe
    with :meth:`subscribe_transactions` / :meth:`subscribe_account_diffs`, stop
    one with :meth:`unsubscribe`. :meth:`stats`, :meth:`status` and
    :meth:`cursor` say how it goes. Every call is a message to the session's
    supervisor actor (:attr:`supervisor`), so a blocking call never holds an
    actor up; events are meant for one consumer thread.
    """

    def __init__(self, supervisor: pykka.ActorRef[Any], scheduler: Scheduler,
                 info: SessionInfo, timing: Timing, tracker: CursorTracker | None = None
                 ) -> None:
        self._supervisor = supervisor
        # The cursor as the application has seen it: each returned event's delta.
        self._tracker = tracker or CursorTracker("", CreateSession(0, 0))
        # The last event returned, its delta not yet applied: applied by the next
        # next_event() or cursor() (no call between removing an event and returning it).
        self._returned: tuple[ManagedEvent, Delta | None] | None = None
        self._last_cursor: Cursor | None = None  # a listener session's, kept at shutdown
        self._scheduler = scheduler
        self._info = info
        self._timing = timing
        self._closed = False
        self._listener_mode = False  # events go to a listener actor, not next_event()
        self._lock = threading.Lock()  # makes shutdown() idempotent across threads
        # Continues handed to the supervisor whose answer is not applied yet.
        self._handed: list[_Handed] = []
        # Taken from the supervisor in batches; bounded by TAKE_BATCH, counted in max_queue.
        self._taken: deque[tuple[ManagedEvent, Delta | None]] = deque()

    @classmethod
    def start(cls, url: str, api_key: str, create: CreateSession, *,
              policy: ReconnectPolicy | None = None, timing: Timing | None = None,
              listener: pykka.ActorRef[Any] | None = None,
              max_queue: int = DEFAULT_MAX_QUEUE,
              sslopt: dict[str, Any] | None = None,
              max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
              max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
              on_lost_continue: LostContinuePolicy = "resend",
              on_starting: Callable[[ConnectionChanged], None] | None = None,
              transactions: Iterable[str] = (), account_diffs: Iterable[str] = ()
              ) -> ManagedBacktestSession:
        """Connect, create the session, return once its identity is known.

        ``url``: a host (``wss://<host>/backtest``) or a ``ws(s)://`` URL;
        ``api_key``: sent only in the control upgrade's ``X-API-Key`` header, never
        logged; ``create``: the range and session options.

        Raises ``ManagedSessionError(kind="create")`` when the session cannot be
        created; bad arguments raise ``ValueError``/``TypeError`` naming the
        field, before any connection is made. The knobs, their defaults and costs:

        * ``policy=None`` (``ReconnectPolicy()``: 0.5 s first delay, doubling to
          30 s, 10 attempts or 300 s per outage): how lost connections restart.
        * ``timing=None`` (``Timing()``: 15 s keepalive, 45 s deadline, meant for
          a real network): every time bound. Against a ``LocalSimulator`` pass
          ``sim.timing``: a dead connection is then found in a second.
        * ``listener=None``: an actor ref told every event (and
          ``ListenerAttached`` first) instead of :meth:`next_event`.
        * ``max_queue=1024``: events held for a slow consumer; at the bound the
          readers stop reading and TCP slows the server. Memory: about
          ``max_queue`` events. Larger absorbs longer pauses of the consumer,
          at the cost of memory and of garbage-collector time.
        * ``sslopt=None``: websocket-client's TLS options for ``wss://`` (e.g.
          ``{"ca_certs": path}``); certificates are verified by default.
        * ``max_frame_size=8388608`` (8 MiB): a larger frame is refused by its
          header and the connection restarted (it never enters memory).
        * ``max_run_ahead=80``: executed blocks the session may run past what
          every subscription confirmed; larger continues are split (see
          :mod:`actors.decisions.pacer`). Each confirmation costs a ping round trip per
          subscription every ``max_run_ahead / 2`` blocks. Up to the server's
          100-slot replay buffer no event can be lost; above it a long outage
          is reported as a ``Gap``.
        * ``on_lost_continue="resend"``: a continue that died unread with its
          connection (see ``ContinueLost``) is written again (a hung backtest is
          the worse failure); ``"raise"`` hands it to the application.
        * ``on_starting=None``: called with each ``ConnectionChanged`` while
          ``start`` waits, so retries (refused, 5xx, ownership busy) can be shown
          before the session exists; it runs on the session's thread: keep it
          quick. The same events are also delivered by ``next_event`` afterwards.
        * ``transactions=()``, ``account_diffs=()``: addresses subscribed as the
          session is created, before its first ``ReadyForContinue`` can be
          answered (the first continue waits for these connections to be Up).
          The way for a listener that answers at once; the same as
          :meth:`subscribe_transactions` / :meth:`subscribe_account_diffs`
          called before the first continue.
        """
        if not isinstance(create, CreateSession):
            raise TypeError(f"create: expected CreateSession, got {type(create).__name__}")
        # attrs validators ran at construction; this catches an instance changed since.
        attrs.validate(create)
        subscriptions = cls._initial_subscriptions(
            {"transactions": transactions, "account_diffs": account_diffs})
        return cls._launch(url, api_key, create, None, policy=policy, timing=timing,
                           listener=listener, max_queue=max_queue, sslopt=sslopt,
                           max_frame_size=max_frame_size, max_run_ahead=max_run_ahead,
                           on_lost_continue=on_lost_continue, on_starting=on_starting,
                           subscriptions=subscriptions)

    @staticmethod
    def _initial_subscriptions(options: dict[str, Any]) -> tuple[SubscribeStream, ...]:
        """Take ``transactions``/``account_diffs`` out of ``options`` as subscribe
        requests, checked here (named, base58) before anything is sent."""
        subscriptions: list[SubscribeStream] = []
        kinds: tuple[StreamKind, ...] = ("transactions", "account_diffs")
        for kind in kinds:
            addresses = options.pop(kind, ())
            if isinstance(addresses, str | bytes):
                raise TypeError(f"{kind}: expected a list of addresses, got one string")
            listed = tuple(addresses)
            if listed:
                subscriptions.append(SubscribeStream(kind, listed))
        return tuple(subscriptions)

    @classmethod
    def attach(cls, url: str, api_key: str, cursor: Cursor, *,
               policy: ReconnectPolicy | None = None, timing: Timing | None = None,
               listener: pykka.ActorRef[Any] | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE,
               sslopt: dict[str, Any] | None = None,
               max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
               max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
               on_lost_continue: LostContinuePolicy = "resend",
               on_starting: Callable[[ConnectionChanged], None] | None = None
               ) -> ManagedBacktestSession:
        """Resume the session ``cursor`` names, right after the event it was taken at.

        The control connection attaches (``Attach(session_id, last_seq)`` and
        resume: the server replays what came after), each stream of the cursor
        is subscribed again with ``replayFromSlot``, and what the application
        already had is dropped at the boundary. A continue the cursor holds as
        sent and unanswered follows the lost-continue rule (``on_lost_continue``).
        The other arguments are those of :meth:`start`; ``url`` may differ from
        the cursor's (the same server under another name).

        Raises ``ManagedSessionError(kind="attach")`` when the session is gone
        (expired, unknown) or belongs to another key; nothing but the attach
        was sent then.
        """
        return cls._resume(url, api_key, check_cursor(cursor), policy=policy, timing=timing,
                           listener=listener, max_queue=max_queue, sslopt=sslopt,
                           max_frame_size=max_frame_size, max_run_ahead=max_run_ahead,
                           on_lost_continue=on_lost_continue, on_starting=on_starting)

    @classmethod
    def _resume(cls, url: str, api_key: str, cursor: Cursor,
                **options: Any) -> ManagedBacktestSession:
        """Launch from a cursor and subscribe its streams (with replay)."""
        subscribes = cls._stream_requests(cursor)  # checked before connecting
        session = cls._launch(url, api_key, cursor.create, cursor, **options)
        try:
            session._subscribe(subscribes)
        except BaseException:
            session.detach()  # the session stays on the server: the cursor still resumes it
            raise
        return session

    @staticmethod
    def _stream_requests(cursor: Cursor) -> list[SubscribeStream]:
        """A cursor's streams as subscribe requests (addresses checked on construction)."""
        return [SubscribeStream(cast(StreamKind, name), stream.addresses)
                for name, stream in cursor.streams.items()]

    def _subscribe(self, requests: list[SubscribeStream]) -> None:
        """Subscribe again after an attach (the replay slots were seeded from the cursor)."""
        for message in requests:
            self._ask(message)
            self._tracker.subscribed(message.kind, message.addresses)

    @classmethod
    def _launch(cls, url: str, api_key: str, create: CreateSession, resume: Cursor | None,
                **options: Any) -> ManagedBacktestSession:
        """Start the supervisor and wait until the session is known (or failed)."""
        started: pykka.ThreadingFuture[SessionInfo] = pykka.ThreadingFuture()
        session, bound = cls._begin(url, api_key, create, resume, started, **options)
        try:
            session._info = started.get(timeout=bound)
        except BaseException as exc:
            # An attach interrupted (Ctrl-C) leaves the session on the server: never
            # closed by a resume that did not finish.
            session.shutdown(detach=resume is not None)
            raise _start_error(exc, resume is not None, bound) from None
        return session

    @classmethod
    def _begin(cls, url: str, api_key: str, create: CreateSession, resume: Cursor | None,
               started: pykka.Future[SessionInfo], *,
               policy: ReconnectPolicy | None = None, timing: Timing | None = None,
               listener: pykka.ActorRef[Any] | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE, sslopt: dict[str, Any] | None = None,
               max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
               max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
               on_lost_continue: LostContinuePolicy = "resend",
               on_starting: Callable[[ConnectionChanged], None] | None = None,
               control: bool = True, subscriptions: tuple[SubscribeStream, ...] = (),
               close_at_completed: bool = True) -> tuple[ManagedBacktestSession, float]:
        """Check every argument, start the supervisor; ``started`` is answered with
        the session's identity (or its error) within the returned bound."""
        # Every argument is checked here, in the caller's thread: a bad one found
        # later, inside an actor, would crash it and leave start() waiting.
        if not isinstance(url, str):
            raise TypeError(f"url: expected a str, got {type(url).__name__}")
        control_url = backtest_ws_url(url) if control else url
        if not isinstance(api_key, str):
            raise TypeError(f"api_key: expected a str, got {type(api_key).__name__}")
        if control and not api_key:
            raise ValueError("api_key: expected a non-empty string")
        _check_optional("policy", policy, ReconnectPolicy, "ReconnectPolicy")
        _check_optional("timing", timing, Timing, "Timing")
        _check_optional("listener", listener, pykka.ActorRef, "a pykka.ActorRef")
        _check_optional("sslopt", sslopt, dict, "a dict of websocket-client ssl options")
        if sslopt is not None and not all(isinstance(k, str) for k in sslopt):
            raise TypeError("sslopt: expected str keys (ssl option names)")
        if type(max_frame_size) is not int or max_frame_size < 1024:
            raise ValueError(f"max_frame_size: expected an integer >= 1024, got "
                             f"{max_frame_size!r}")
        if type(max_queue) is not int or max_queue < LINKS_PER_SESSION:
            raise ValueError(f"max_queue: expected an integer >= {LINKS_PER_SESSION}, "
                             f"got {max_queue!r}")
        if type(max_run_ahead) is not int or max_run_ahead < 1:
            raise ValueError(f"max_run_ahead: expected an integer >= 1, got {max_run_ahead!r}")
        if on_lost_continue not in ("resend", "raise"):
            raise ValueError(f"on_lost_continue: expected 'resend' or 'raise', got "
                             f"{on_lost_continue!r}")
        timing = timing or Timing()
        scheduler = Scheduler()
        config = SessionConfig(
            url=control_url, api_key=api_key, create=create, policy=policy or ReconnectPolicy(),
            timing=timing, max_queue=max_queue, sslopt=sslopt, max_frame_size=max_frame_size,
            max_run_ahead=max_run_ahead, on_lost_continue=on_lost_continue,
            on_starting=on_starting, resume=resume, control=control,
            subscriptions=subscriptions, close_at_completed=close_at_completed)
        supervisor = SessionSupervisor.start(config, scheduler=scheduler, started=started,
                                             listener=listener)
        tracker = CursorTracker(control_url, create, resume)
        for message in subscriptions:
            tracker.subscribed(message.kind, message.addresses)
        info = SessionInfo("", "") if resume is None else resume.info
        session = cls(supervisor, scheduler, info, timing, tracker)
        session._listener_mode = listener is not None
        # Bound: the policy's outage budget, plus the attempt under way when it runs
        # out (connect and one handshake answer); past that a bug, never a wait.
        bound = config.policy.max_total + timing.connect + timing.handshake + SHUTDOWN_MARGIN
        return session, bound

    # --- identity and status ------

    @property
    def session_info(self) -> SessionInfo:
        """The session's identity (``session_id``, ``rpc_endpoint``, ``task_id``), known
        once :meth:`start` returned; the id is what a resume and the server's logs name."""
        return self._info

    @property
    def supervisor(self) -> pykka.ActorRef[Any]:
        """The supervisor actor: application actors ``tell``/``ask`` it directly."""
        return self._supervisor

    def status(self) -> dict[str, ConnectionStatus]:
        """Each connection's status now: ``"control"``, ``"transactions"``,
        ``"account_diffs"`` -> ``Connecting``, ``Up``, ``Reconnecting``, ``Failed`` or
        ``Closed``. One round trip to the supervisor (it answers at once)."""
        result: dict[str, ConnectionStatus] = self._ask(GetStatus())
        return result

    def stats(self) -> SessionStats:
        """The session's counters now (:class:`~actors.stats.SessionStats`: reconnects,
        duplicates by kind, continues, gaps, ...). Also read as a dict: ``stats["key"]``.
        One round trip to the supervisor; cheap enough for a progress line."""
        result: SessionStats = self._ask(GetStats())
        return result

    def cursor(self) -> Cursor:
        """Where to resume this session: right after the last event the application got.

        Works at any time, also after a failure or shutdown. Persist it with
        ``to_json()`` and resume with :meth:`attach` (see :mod:`actors.decisions.cursor`).
        """
        if self._listener_mode:
            if not self._closed:
                try:
                    answer: Any = self._supervisor.ask(GetCursor(), timeout=ASK_TIMEOUT)
                    self._last_cursor = answer
                except (pykka.ActorDeadError, pykka.Timeout):
                    pass
            if self._last_cursor is not None:
                return self._last_cursor
        self._apply_returned()
        self._settle_continues()
        return self._tracker.cursor(self._info)

    @property
    def delivered_seq(self) -> int | None:
        """The ``seqId`` of the last control event returned (what a journal records)."""
        self._apply_returned()
        return self._tracker.last_seq

    def _apply_returned(self) -> None:
        returned, self._returned = self._returned, None
        if returned is not None:
            self._tracker.returned(*returned)

    # --- subscriptions ------

    def subscribe_transactions(self, addresses: Iterable[str]) -> None:
        """Deliver every transaction that mentions one of ``addresses`` (base58 keys).

        Subscribe before the first continue so the first block is captured. A
        bad address raises ``ValueError`` naming its index, before anything is
        sent. Cost: one more PubSub connection (kept alive, restarted and
        replayed like the control one) and one barrier round trip every
        ``max_run_ahead / 2`` blocks. A transaction that mentions several of the
        addresses comes once, ``Transaction.matched`` naming them.
        """
        message = SubscribeStream("transactions", addresses)
        self._ask(message)
        self._tracker.subscribed("transactions", message.addresses)

    def subscribe_account_diffs(self, addresses: Iterable[str]) -> None:
        """Deliver every write to one of the accounts ``addresses`` (an ``AccountDiff``
        with its pre and post state); same rules and cost as
        :meth:`subscribe_transactions`."""
        message = SubscribeStream("account_diffs", addresses)
        self._ask(message)
        self._tracker.subscribed("account_diffs", message.addresses)

    def unsubscribe(self, kind: StreamKind, timeout: float | None = None) -> None:
        """Close the subscription ``kind`` (``"transactions"`` or ``"account_diffs"``)
        of a running session; returns once it is closed.

        Every item of the blocks executed before it returns is delivered (by
        ``next_event``, before the ``ConnectionChanged(kind, Closed())`` that
        follows), none after. Cost: one ping/pong round trip on that connection
        (longer while it is reconnecting), during which no continue is written.
        ``ValueError`` if ``kind`` is not subscribed; ``TimeoutError`` after
        ``timeout`` seconds (the unsubscribe still completes). The kind may be
        subscribed again afterwards.
        """
        message = UnsubscribeStream(kind)
        wait = _check_timeout(timeout)
        reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
        self._tell(attrs.evolve(message, reply=reply))
        try:
            reply.get(timeout=wait)
        except pykka.Timeout:
            raise TimeoutError(f"unsubscribe not confirmed within {timeout}s") from None
        self._tracker.unsubscribed(kind)

    def unsubscribe_transactions(self, timeout: float | None = None) -> None:
        """``unsubscribe("transactions")``."""
        self.unsubscribe("transactions", timeout)

    def unsubscribe_account_diffs(self, timeout: float | None = None) -> None:
        """``unsubscribe("account_diffs")``."""
        self.unsubscribe("account_diffs", timeout)

    # --- conveniences ------

    def __iter__(self) -> Iterator[ManagedEvent]:
        """``for event in session``: every event, ``Completed`` last (then it stops).

        The same events as :meth:`next_event` with no timeout; the loop must
        still answer each ``ReadyForContinue`` (or use :meth:`run`). A failure
        raises ``ManagedSessionError`` out of the loop after the events before it.
        """
        while True:
            event = self.next_event()
            yield event
            if isinstance(event, Completed):
                return

    def run(self, advance: int = 1,
            on_event: Callable[[ManagedEvent], ContinueParams | None] | None = None, *,
            timeout: float | None = None) -> Completed:
        """Drive the session to its end: the ready -> continue loop, done for you.

        Each event goes to ``on_event`` (if given) first. At each
        ``ReadyForContinue`` the next continue is sent: what ``on_event``
        returned for it if that is a ``ContinueParams`` (inject transactions,
        change accounts, vary the advance), else ``ContinueParams(advance_count=
        advance)``; ``advance`` counts produced blocks, not slots. A
        ``ContinueLost`` the session did not resend (``on_lost_continue=
        "raise"``) is sent again (``on_event`` may return other params for it,
        or raise to stop). Returns the ``Completed`` event (its ``summary``);
        raises ``ManagedSessionError`` when the session fails, whatever
        ``on_event`` raises, and ``TimeoutError`` when no event comes within
        ``timeout`` seconds (default: wait as long as the session lives).
        """
        if type(advance) is not int or advance < 1:
            raise ValueError(f"advance: expected an integer >= 1, got {advance!r}")
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event: expected a callable or None, got "
                            f"{type(on_event).__name__}")
        wait = _check_timeout(timeout)
        default = ContinueParams(advance_count=advance)
        while True:
            event = self.next_event(timeout=wait)
            answer = on_event(event) if on_event is not None else None
            params = answer if isinstance(answer, ContinueParams) else None
            if isinstance(event, ReadyForContinue):
                self.send_continue(params or default, timeout=wait)
            elif isinstance(event, ContinueLost) and not event.resent:
                self.send_continue(params or event.params, timeout=wait)
            elif isinstance(event, Completed):
                return event

    # --- events and continues ------

    def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """The next event; ``TimeoutError`` if none within ``timeout`` seconds.

        Meant for one consumer thread (events are handed over in batches).

        Raises ``ManagedSessionError`` once the session cannot go on (after every
        event that came before the failure was returned).

        Raises ``TypeError``/``ValueError`` for a bad ``timeout`` before anything
        is asked. An exception that interrupts the wait (``KeyboardInterrupt``,
        an exception raised by a signal handler) loses nothing: the take is
        withdrawn, or, if its batch had already been handed over, the batch is
        kept and the next call returns it. The interrupt is then re-raised.
        """
        wait = _check_timeout(timeout)
        self._apply_returned()
        taken = self._taken
        if not taken:
            if self._listener_mode:
                raise ValueError("next_event: this session tells its events to its listener "
                                 "actor; nothing would ever come here")
            reply: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
            try:
                # Inside the try: an interrupt that lands just after the take was
                # handed over must withdraw it too (a take never handed over is
                # withdrawn as well: CancelTake finds nothing, nothing ever fills it).
                self._tell(TakeEvents(reply, TAKE_BATCH))
                batch: list[ManagedEvent] = reply.get(timeout=wait)
            except pykka.Timeout:
                withdrawn, interrupt = self._withdraw(reply)
                if interrupt is not None:
                    raise interrupt from None
                if withdrawn:
                    raise TimeoutError(f"no event within {timeout}s") from None
                if not taken:
                    reply.get(timeout=0)  # answered with the session's error: raise it
            except ManagedSessionError:
                raise  # the session's own answer: it stays, every later take gets it
            except BaseException:
                self._withdraw(reply)  # a second interrupt meanwhile: this one is raised
                raise
            else:
                taken.extend(_with_deltas(batch))
        # No call between removing the event and returning it, so an asynchronous
        # exception cannot land between the two (CPython runs signal handlers at calls
        # and backward jumps, not at subscripts or returns).
        pair = taken[0]
        del taken[0]
        self._returned = pair
        return pair[0]

    def _withdraw(self, reply: pykka.ThreadingFuture[list[ManagedEvent]]
                  ) -> tuple[bool, BaseException | None]:
        """Withdraw a take nobody waits for any more: (withdrawn, a later interrupt).

        ``withdrawn`` is True if nothing had been put in the take. If its batch
        was already handed over, the batch goes to ``_taken`` so the next
        ``next_event`` returns it. The supervisor handles messages in order, so
        once it has answered a ``CancelTake`` the future is final: set now, or
        never. An interrupt during this (a second Ctrl-C) repeats the question
        (``CancelTake`` is idempotent) and is handed back for the caller to
        raise once the batch is safe.
        """
        interrupt: BaseException | None = None
        outcome: list[ManagedEvent] | bool | None = None  # the batch, or withdrawn / error
        for _ in range(WITHDRAW_ATTEMPTS):
            try:
                try:
                    self._supervisor.ask(CancelTake(reply), timeout=ASK_TIMEOUT)
                except (pykka.ActorDeadError, pykka.Timeout):
                    # A stopped supervisor answers nothing more: final as well. One
                    # that does not answer within ASK_TIMEOUT is a bug; what its take
                    # holds now is kept, anything later is not waited for.
                    pass
                try:
                    outcome = reply.get(timeout=0)
                except pykka.Timeout:
                    outcome = True
                except Exception:  # noqa: BLE001 - the session's error: sticky, next take
                    outcome = False
                break
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                interrupt = interrupt or exc
        if isinstance(outcome, list):
            self._taken.extend(_with_deltas(outcome))
            return False, interrupt
        # None only after every attempt failed, so ``interrupt`` is set and is raised.
        return bool(outcome), interrupt

    def send_continue(self, params: ContinueParams | None = None,
                      timeout: float | None = None) -> None:
        """Write a continue once every connection is Up; returns when it is written.

        Raises ``ManagedSessionError(kind="continue_outstanding")`` while the
        previous continue has not been answered, or the session's error.
        """
        wait = _check_timeout(timeout)
        reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
        self._hand_over_continue(params, reply)
        try:
            reply.get(timeout=wait)
        except pykka.Timeout:
            raise TimeoutError(f"continue not written within {timeout}s") from None
        finally:
            self._settle_continues()

    def _hand_over_continue(self, params: ContinueParams | None,
                            reply: pykka.Future[None]) -> None:
        """Check ``params``, note the continue as sent (write-ahead), hand it over.

        Shared with the asyncio facade, which waits for ``reply`` its own way.
        """
        params = ContinueParams() if params is None else params
        if not isinstance(params, ContinueParams):
            raise TypeError(f"params: expected ContinueParams, got {type(params).__name__}")
        # attrs validators ran at construction; this catches an instance changed since
        # (object.__setattr__), before the value can reach the wire.
        attrs.validate(params)
        self._apply_returned()
        self._settle_continues()
        # Write-ahead: a cursor taken from now on holds it as sent (the lost-continue
        # rule settles a continue that never reached the server).
        before = self._tracker.pending
        self._tracker.continue_sent(params)
        handed = _Handed(reply, self._tracker.pending, before)
        try:
            self._tell(SendContinue(params, reply))
        except ManagedSessionError:
            self._tracker.pending = before
            raise
        self._handed.append(handed)

    def _settle_continues(self) -> None:
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
                if exc.kind in ("continue_outstanding", "closed"):
                    for other in self._handed:
                        if other.before is handed.noted:
                            other.before = handed.before
                    if self._tracker.pending is handed.noted:
                        self._tracker.pending = handed.before
            except Exception:  # noqa: BLE001 - another failure: the session's, raised elsewhere
                pass
        # Rebuilt, not removed from: a second consumer thread settling at the same
        # time must not make this raise.
        self._handed = waiting

    # --- shutdown ------

    def detach(self) -> None:
        """Close the connections but leave the session on the server (no
        ``closeBacktestSession``): it waits ``disconnectTimeoutSecs`` for
        :meth:`attach` with :meth:`cursor` (here or in another process)."""
        self.shutdown(detach=True)

    def shutdown(self, *, detach: bool = False) -> None:
        """Close everything; idempotent, never raises, bounded by graceful_close + margin."""
        with self._lock:
            if self._closed:
                return
            if self._listener_mode:
                try:
                    self.cursor()  # kept: cursor() still answers after the supervisor is gone
                except Exception:  # noqa: BLE001 - shutdown never raises
                    pass
            self._closed = True
        deadline = time.monotonic() + self._timing.graceful_close + SHUTDOWN_MARGIN
        try:
            reply: pykka.ThreadingFuture[list[pykka.ActorRef[Any]]] = pykka.ThreadingFuture()
            self._supervisor.tell(Shutdown(reply, detach))
            leftovers = reply.get(timeout=max(0.1, deadline - time.monotonic()))
            for ref in leftovers:
                ref.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - shutdown never raises
            pass
        try:
            self._supervisor.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001
            pass
        self._scheduler.stop(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> ManagedBacktestSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- internals ------

    def _tell(self, message: Any) -> None:
        if self._closed:
            raise ManagedSessionError("closed", "session shut down")
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            raise ManagedSessionError("closed", "session shut down") from None

    def _ask(self, message: Any) -> Any:
        if self._closed:
            raise ManagedSessionError("closed", "session shut down")
        try:
            return self._supervisor.ask(message, timeout=ASK_TIMEOUT)
        except pykka.ActorDeadError:
            raise ManagedSessionError("closed", "session shut down") from None
        except pykka.Timeout:
            raise ManagedSessionError("internal", f"the session did not answer "
                                      f"{type(message).__name__} within {ASK_TIMEOUT}s") from None
