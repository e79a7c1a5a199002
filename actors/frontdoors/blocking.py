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

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import pykka

from protocol import ContinueParams, ContinueToParams, CreateSession, ReconnectPolicy, Timing
from protocol.pubsub import StreamKind

from ..decisions.cursor import Cursor, CursorTracker, check_cursor
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..decisions.stepping import DiscoveryStep, StepInProgress
from ..events import (
    Completed,
    ConnectionChanged,
    ConnectionStatus,
    ManagedEvent,
    ManagedSessionError,
    SessionInfo,
)
from ..requests import CancelTake, SubscribeStream, TakeEvents, UnsubscribeStream
from ..runtime.connection import DEFAULT_MAX_FRAME_SIZE
from ..runtime.timers import Scheduler
from ..stats import SessionStats
from ..supervision.config import DEFAULT_MAX_QUEUE, TAKE_BATCH
from .consumer import (
    ASK_TIMEOUT,
    SessionCore,
    SessionOptions,
    check_timeout,
    initial_subscriptions,
)
from .drive import Drive

# Tries at withdrawing an interrupted take when interrupts keep coming (a held Ctrl-C).
WITHDRAW_ATTEMPTS = 5


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
        self._core = SessionCore(supervisor, scheduler, info, timing, tracker)

    @classmethod
    def from_core(cls, core: SessionCore) -> ManagedBacktestSession:
        """The blocking facade over a session another front door started (a handle)."""
        session = cls.__new__(cls)
        session._core = core
        return session

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
              transactions: Iterable[str] = (), account_diffs: Iterable[str] = (),
              start_timeout: float | None = None) -> ManagedBacktestSession:
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
        * ``start_timeout=None``: the longest wait for the session to exist; None
          is the policy's whole outage budget (300 s by default), meant for a
          server that is restarting. A command line uses a short one, so that a
          wrong URL or a server that is not running fails in seconds; each retry
          is still shown through ``on_starting``.
        """
        if not isinstance(create, CreateSession):
            raise TypeError(f"create: expected CreateSession, got {type(create).__name__}")
        # attrs validators ran at construction; this catches an instance changed since.
        attrs.validate(create)
        options = SessionOptions.of(locals(), subscriptions=initial_subscriptions(
            transactions, account_diffs))
        return cls.from_core(SessionCore.launch(url, api_key, create, None, options))

    @classmethod
    def attach(cls, url: str, api_key: str, cursor: Cursor, *,
               policy: ReconnectPolicy | None = None, timing: Timing | None = None,
               listener: pykka.ActorRef[Any] | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE,
               sslopt: dict[str, Any] | None = None,
               max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
               max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
               on_lost_continue: LostContinuePolicy = "resend",
               on_starting: Callable[[ConnectionChanged], None] | None = None,
               start_timeout: float | None = None) -> ManagedBacktestSession:
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
        cursor = check_cursor(cursor)
        options = SessionOptions.of(locals())
        return cls.from_core(SessionCore.resume(url, api_key, cursor, options))

    # --- identity and status ------

    @property
    def session_info(self) -> SessionInfo:
        """The session's identity (``session_id``, ``rpc_endpoint``, ``task_id``), known
        once :meth:`start` returned; the id is what a resume and the server's logs name."""
        return self._core.info

    @property
    def supervisor(self) -> pykka.ActorRef[Any]:
        """The supervisor actor: application actors ``tell``/``ask`` it directly."""
        return self._core.supervisor

    def status(self) -> dict[str, ConnectionStatus]:
        """Each connection's status now: ``"control"``, ``"transactions"``,
        ``"account_diffs"`` -> ``Connecting``, ``Up``, ``Reconnecting``, ``Failed`` or
        ``Closed``. One round trip to the supervisor (it answers at once)."""
        return self._core.status()

    def stats(self) -> SessionStats:
        """The session's counters now (:class:`~actors.stats.SessionStats`: reconnects,
        duplicates by kind, continues, gaps, ...). Also read as a dict: ``stats["key"]``.
        One round trip to the supervisor; cheap enough for a progress line."""
        return self._core.stats()

    def cursor(self) -> Cursor:
        """Where to resume this session: right after the last event the application got.

        Works at any time, also after a failure or shutdown. Persist it with
        ``to_json()`` and resume with :meth:`attach` (see :mod:`actors.decisions.cursor`).
        """
        return self._core.cursor()

    @property
    def delivered_seq(self) -> int | None:
        """The ``seqId`` of the last control event returned (what a journal records)."""
        return self._core.delivered_seq

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
        self._core.subscribe(SubscribeStream("transactions", addresses))

    def subscribe_account_diffs(self, addresses: Iterable[str]) -> None:
        """Deliver every write to one of the accounts ``addresses`` (an ``AccountDiff``
        with its pre and post state); same rules and cost as
        :meth:`subscribe_transactions`."""
        self._core.subscribe(SubscribeStream("account_diffs", addresses))

    def subscribe_actions(self) -> None:
        """Deliver the result of each scheduled action (``CreateSession.actions``) as an
        ``ActionResult``, once each, in the order they ran, through drops of the link
        (it resumes with replay, as the other streams). Subscribe before the first
        continue; one PubSub connection."""
        self._core.subscribe(SubscribeStream.actions())

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
        wait = check_timeout(timeout)
        reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
        self._core.tell(attrs.evolve(message, reply=reply))
        try:
            reply.get(timeout=wait)
        except pykka.Timeout:
            raise TimeoutError(f"unsubscribe not confirmed within {timeout}s") from None
        self._core.tracker.unsubscribed(kind)

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
        completed = Drive(self, advance, on_event=on_event, timeout=check_timeout(timeout)).run()
        assert completed is not None  # a plain Drive is never stopped
        return completed

    # --- events and continues ------

    def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """The next event; ``TimeoutError`` if none within ``timeout`` seconds.

        Several consumer threads may share a session: one of them takes a batch at
        a time, the others wait for it, and every event goes to exactly one thread, in
        the session's order (Completed after every other event).

        Raises ``ManagedSessionError`` once the session cannot go on (after every
        event that came before the failure was returned).

        Raises ``TypeError``/``ValueError`` for a bad ``timeout`` before anything
        is asked. An exception that interrupts the wait (``KeyboardInterrupt``,
        an exception raised by a signal handler) loses nothing: the take is
        withdrawn, or, if its batch had already been handed over, the batch is
        kept and the next call returns it. The interrupt is then re-raised.
        """
        wait = check_timeout(timeout)
        core = self._core
        taken = core.taken
        started = None  # set when this call waits: a retry gets only what is left
        if not taken:
            core.apply_returned()  # next_taken() does it when an event is at hand
            if core.listener_mode:
                raise ValueError("next_event: this session tells its events to its listener "
                                 "actor; nothing would ever come here")
            started = time.monotonic()
            # One take at a time (see SessionCore.take_lock); a thread that waited here
            # for another's take usually finds its batch and takes nothing itself.
            try:
                # Inside the try, released if held: an interrupt that lands as the
                # lock is taken (CPython runs signal handlers right after a call) must
                # not leave it held, with every other consumer waiting.
                if not core.acquire_take(wait):
                    raise TimeoutError(f"no event within {timeout}s")
                if not taken:
                    self._take(None if wait is None
                               else max(0.0, wait - (time.monotonic() - started)), timeout)
            finally:
                core.release_take()
        try:
            return core.next_taken()
        except IndexError:  # another consumer thread took the last one meanwhile
            if started is None or wait is None:
                return self.next_event(timeout)
            return self.next_event(max(0.0, wait - (time.monotonic() - started)))

    def _take(self, wait: float | None, timeout: float | None) -> None:
        """Ask for a batch and add it to the taken events (the caller holds the take lock)."""
        core = self._core
        taken = core.taken
        reply: pykka.ThreadingFuture[list[ManagedEvent]] = pykka.ThreadingFuture()
        try:
            # Inside the try: an interrupt that lands just after the take was
            # handed over must withdraw it too (a take never handed over is
            # withdrawn as well: CancelTake finds nothing, nothing ever fills it).
            core.tell(TakeEvents(reply, TAKE_BATCH))
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
            core.add_taken(batch)

    def _withdraw(self, reply: pykka.ThreadingFuture[list[ManagedEvent]]
                  ) -> tuple[bool, BaseException | None]:
        """Withdraw a take nobody waits for any more: (withdrawn, a later interrupt).

        ``withdrawn`` is True if nothing had been put in the take. If its batch
        was already handed over, the batch is kept with the taken events so the next
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
                    self._core.supervisor.ask(CancelTake(reply), timeout=ASK_TIMEOUT)
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
            self._core.add_taken(outcome)
            return False, interrupt
        # None only after every attempt failed, so ``interrupt`` is set and is raised.
        return bool(outcome), interrupt

    def send_continue(self, params: ContinueParams | None = None,
                      timeout: float | None = None) -> None:
        """Write a continue once every connection is Up; returns when it is written.

        Raises ``ManagedSessionError(kind="continue_outstanding")`` while the
        previous continue has not been answered, or the session's error.
        """
        self._send(params, timeout)

    def send_continue_to(self, params: ContinueToParams, timeout: float | None = None) -> None:
        """Write a continue-to once every connection is Up; returns when it is written.

        The session runs up to, not including, batch ``params.batch_index`` of
        ``params.slot`` and answers with a ``Paused`` event. The same rules as a
        continue (gated on live connections, never written twice blindly, a lost
        one reported as ``ContinueLost``), plus: a target that is not ahead of the
        session or past its range raises ``InvalidArgument`` (a ``ValueError``)
        before anything is sent; a batch index the slot does not have is answered
        with an ``Error`` event, and the session does not move.
        """
        if not isinstance(params, ContinueToParams):
            raise TypeError(f"params: expected ContinueToParams, got {type(params).__name__}")
        self._send(params, timeout)

    def advance_to_discovery(self, transactions: Iterable[str] = (),
                             timeout: float | None = None) -> DiscoveryStep:
        """Pause right before the next discovered batch, or say there is none.

        The reference's ``advance_to_discovery``: take events until the session
        rests (``ReadyForContinue`` or ``Paused``), then continue-to the next
        announced ``DiscoveryBatch`` ahead of it and take events until ``Paused``.
        ``transactions`` (base64) run first, where the session rests: at a pause,
        right before the paused-at batch. Every event taken is in the result's
        ``events``. No discovery ahead: the result is ``exhausted`` and nothing was
        sent (go on with ``send_continue``). ``timeout`` bounds each wait.
        """
        step = StepInProgress(self._core.stepping, transactions)  # arguments checked
        wait = check_timeout(timeout)
        core = self._core
        try:
            core.apply_returned()
            while step.result is None:
                request = step.request()
                if request is not None:
                    self._send(request, timeout)
                elif step.result is None:
                    step.feed(self.next_event(wait))
                    core.apply_returned()
            return step.result
        except BaseException:
            core.give_back(step.events)  # nothing taken is lost: the next takes return them
            raise

    def _send(self, params: ContinueParams | ContinueToParams | None,
              timeout: float | None) -> None:
        wait = check_timeout(timeout)
        reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
        self._core.hand_over_continue(params, reply)
        try:
            reply.get(timeout=wait)
        except pykka.Timeout:
            raise TimeoutError(f"continue not written within {timeout}s") from None
        finally:
            self._core.settle_continues()

    # --- shutdown ------

    def detach(self) -> None:
        """Close the connections but leave the session on the server (no
        ``closeBacktestSession``): it waits ``disconnectTimeoutSecs`` for
        :meth:`attach` with :meth:`cursor` (here or in another process)."""
        self.shutdown(detach=True)

    def shutdown(self, *, detach: bool = False) -> None:
        """Close everything; idempotent, never raises, bounded by graceful_close + margin."""
        self._core.shutdown(detach=detach)

    def __enter__(self) -> ManagedBacktestSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
