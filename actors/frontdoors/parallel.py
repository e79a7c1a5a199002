"""ManagedParallelSession and ParallelSubSession: many sub-sessions over one control socket.

The reference's 0.9+ parallel surface (managed-behavior.md §5.2). ``start`` sends
one create with ``parallel``; the server splits the range into sub-sessions and
drives them all over that one control connection
(:class:`~actors.supervision.parallel_hub.ParallelHub`). Each sub-session is a
whole managed session (:class:`ParallelSubSession`, the blocking front door with
its own subscriptions, pacer and events) whose control link is a port on the hub:
every guarantee of a single session holds per sub-session (exact delivery, no
double advance, ``Gap`` when a loss cannot be avoided, gating on the shared
control and its own subscriptions, the lost-continue rule), a control reconnect
re-attaches them all at once, and one sub-session's failure is its own.

Usage::

    with ManagedParallelSession.start(url, key, CreateSession(a, b)) as parallel:
        for sub in parallel.take_sub_sessions():
            sub.subscribe_transactions([...])   # before its first continue
            ...                                  # drive each (threads, or in turn)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs
import pykka

from protocol import (
    AttachParallel,
    ContinueParams,
    ContinueToParams,
    CreateSession,
    ReconnectPolicy,
    Timing,
    backtest_ws_url,
    resolve_rpc_url,
)

from ..decisions.cursor import Cursor, check_cursor
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import ManagedEvent, ManagedSessionError, SessionInfo
from ..runtime.connection import DEFAULT_MAX_FRAME_SIZE
from ..runtime.timers import Scheduler
from ..supervision.config import DEFAULT_MAX_QUEUE
from ..supervision.parallel_hub import HubStats, ParallelHub, StopHub
from .blocking import ManagedBacktestSession
from .consumer import SHUTDOWN_MARGIN, SessionCore, SessionOptions


def ranged(error: ManagedSessionError, slots: tuple[int, int]) -> ManagedSessionError:
    """``error`` naming the sub-session's range (``slots a..=b: ...``), once; the same
    type (an ``InvalidArgument`` stays one)."""
    prefix = f"slots {slots[0]}..={slots[1]}: "
    if error.reason.startswith(prefix):
        return error
    out = ManagedSessionError.__new__(type(error))
    ManagedSessionError.__init__(out, error.kind, prefix + error.reason)
    return out


class ParallelSubSession(ManagedBacktestSession):
    """One sub-session of a :class:`ManagedParallelSession`: the blocking front door
    (``subscribe_transactions``, ``subscribe_account_diffs``, ``next_event``,
    ``send_continue``, ``send_continue_to``, ``advance_to_discovery``, ``run``,
    ``cursor``, ``stats``, ``shutdown``), driven over the shared control socket.

    ``range``: its ``(start_slot, end_slot)`` as the server split it. It closes
    itself at ``Completed``, as a single session does; ``shutdown`` closes its own
    links (the shared control belongs to the parallel session).
    """

    range: tuple[int, int]

    @classmethod
    def of(cls, core: SessionCore, slots: tuple[int, int]) -> ParallelSubSession:
        """The front door over a sub-session's started core, covering ``slots``."""
        sub = cls.from_core(core)
        assert isinstance(sub, ParallelSubSession)
        sub.range = slots
        return sub

    def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """As ``ManagedBacktestSession.next_event``; a failure names this sub-session's
        range (``slots a..=b: ...``), so a run over many says which range failed."""
        try:
            return super().next_event(timeout)
        except ManagedSessionError as exc:
            raise ranged(exc, self.range) from exc

    def _send(self, params: ContinueParams | ContinueToParams | None,
              timeout: float | None) -> None:
        try:
            super()._send(params, timeout)
        except ManagedSessionError as exc:
            raise ranged(exc, self.range) from exc

    @property
    def info(self) -> SessionInfo:
        """Its identity: ``session_id`` and the ``rpc_endpoint`` of its PubSub streams."""
        return self.session_info


class ManagedParallelSession:
    """A parallel session: make one with :meth:`start`, take its sub-sessions once."""

    def __init__(self, hub: pykka.ActorRef[Any], scheduler: Scheduler, control_session_id: str,
                 subs: list[ParallelSubSession], timing: Timing) -> None:
        self._hub = hub
        self._scheduler = scheduler
        self._control_session_id = control_session_id
        self._subs = subs
        self._all = list(subs)
        self._timing = timing
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, url: str, api_key: str, create: CreateSession, *,
              policy: ReconnectPolicy | None = None, timing: Timing | None = None,
              max_queue: int = DEFAULT_MAX_QUEUE, sslopt: dict[str, Any] | None = None,
              max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
              max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
              on_lost_continue: LostContinuePolicy = "resend",
              start_timeout: float | None = None) -> ManagedParallelSession:
        """Create the parallel session; return once every sub-session is known and its
        control port is Up (``create.parallel`` is set here). The arguments are those
        of ``ManagedBacktestSession.start``; they apply to every sub-session.

        Raises ``ManagedSessionError(kind="create")`` when the server refuses the
        create or it cannot be reached within the policy's budget.
        """
        if not isinstance(create, CreateSession):
            raise TypeError(f"create: expected CreateSession, got {type(create).__name__}")
        options = SessionOptions.of(locals())
        control_url = backtest_ws_url(url)
        hub, scheduler, timing, bound, started = cls._start_hub(
            control_url, api_key, attrs.evolve(create, parallel=True), options)
        subs: list[ParallelSubSession] = []
        try:
            created, endpoints = started.get(timeout=bound)
            for index, session_id in enumerate(created.session_ids):
                first, last = created.start_slots[index], created.end_slots[index]
                rpc = resolve_rpc_url(control_url, endpoints.get(session_id,
                                                                 f"/backtest/{session_id}"))
                cursor = Cursor(control_url, session_id, rpc, first, last)
                core = SessionCore.launch(url, api_key, cursor.create, cursor, attrs.evolve(
                    options, control_hub=hub))
                subs.append(ParallelSubSession.of(core, (first, last)))
        except BaseException as exc:
            for sub in subs:
                sub.shutdown()
            cls._stop_hub(hub, scheduler, timing, detach=False)
            if isinstance(exc, pykka.Timeout | TimeoutError):
                raise ManagedSessionError("create", f"no parallel session within "
                                                    f"{bound:.0f}s") from None
            raise
        return cls(hub, scheduler, created.control_session_id, subs, timing)

    @classmethod
    def attach(cls, url: str, api_key: str, control_session_id: str,
               cursors: Sequence[Cursor], *, policy: ReconnectPolicy | None = None,
               timing: Timing | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               sslopt: dict[str, Any] | None = None,
               max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
               max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
               on_lost_continue: LostContinuePolicy = "resend",
               start_timeout: float | None = None) -> ManagedParallelSession:
        """Re-take a parallel session from its sub-sessions' cursors (each right after the
        last event its application got; see ``ManagedBacktestSession.attach``).

        One ``attachParallelControlSessionV2`` carries every cursor's ``last_seq``;
        each sub-session then resumes as a single session does (its streams
        subscribed again with replay, a pending continue settled by the
        lost-continue rule). A sub-session left out (completed) is not attached.
        Raises ``ManagedSessionError(kind="attach")`` when the server no longer
        has the parallel session or another key owns it.
        """
        cursors = [check_cursor(c) for c in cursors]
        ids = [c.session_id for c in cursors]
        if len(set(ids)) != len(ids):
            raise ValueError("cursors: the same sub-session twice (one front door each)")
        options = SessionOptions.of(locals())
        control_url = backtest_ws_url(url)
        attach = AttachParallel(control_session_id, {
            c.session_id: c.last_seq for c in cursors if c.last_seq is not None})
        hub, scheduler, timing, bound, started = cls._start_hub(
            control_url, api_key, CreateSession(0, 0, parallel=True), options, attach=attach,
            sub_sessions=tuple(c.session_id for c in cursors))
        subs: list[ParallelSubSession] = []
        try:
            started.get(timeout=bound)
            for cursor in cursors:
                core = SessionCore.resume(url, api_key, cursor,
                                          attrs.evolve(options, control_hub=hub))
                subs.append(ParallelSubSession.of(core, (cursor.start_slot, cursor.end_slot)))
        except BaseException as exc:
            for sub in subs:
                sub.shutdown(detach=True)
            cls._stop_hub(hub, scheduler, timing, detach=True)
            if isinstance(exc, pykka.Timeout | TimeoutError):
                raise ManagedSessionError("attach", f"no parallel session within "
                                                    f"{bound:.0f}s") from None
            if isinstance(exc, ManagedSessionError) and exc.kind != "attach":
                raise ManagedSessionError("attach", exc.reason) from exc
            raise
        return cls(hub, scheduler, control_session_id, subs, timing)

    @staticmethod
    def _start_hub(control_url: str, api_key: str, create: CreateSession,
                   options: SessionOptions, *, attach: AttachParallel | None = None,
                   sub_sessions: tuple[str, ...] = ()
                   ) -> tuple[pykka.ActorRef[Any], Scheduler, Timing, float,
                              pykka.ThreadingFuture[Any]]:
        timing = options.timing or Timing()
        policy = options.policy or ReconnectPolicy()
        scheduler = Scheduler()
        started: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        hub = ParallelHub.start(url=control_url, api_key=api_key, create=create,
                                policy=policy, timing=timing, scheduler=scheduler,
                                started=started, sslopt=options.sslopt, attach=attach,
                                sub_sessions=sub_sessions)
        bound = policy.max_total + timing.connect + timing.handshake + SHUTDOWN_MARGIN
        if options.start_timeout is not None:
            bound = min(bound, options.start_timeout)
        return hub, scheduler, timing, bound, started

    @property
    def control_session_id(self) -> str:
        """The server's name of the parallel control session (what a re-attach names)."""
        return self._control_session_id

    def take_sub_sessions(self) -> list[ParallelSubSession]:
        """The sub-sessions, in range order; once: later calls return an empty list
        (each sub-session has one owner)."""
        with self._lock:
            subs, self._subs = self._subs, []
        return subs

    def stats(self) -> dict[str, Any]:
        """The shared link's counters: restarts, events routed, refusals, ..."""
        try:
            return dict(self._hub.ask(HubStats(), block=True, timeout=10.0))
        except pykka.ActorDeadError:
            raise ManagedSessionError("closed", "parallel session shut down") from None

    def shutdown(self, *, detach: bool = False) -> None:
        """Close every sub-session, then the shared control (``detach``: leave them on
        the server); idempotent, never raises, bounded by ``graceful_close`` + margin
        per step."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sub in self._all:
            sub.shutdown(detach=detach)
        self._stop_hub(self._hub, self._scheduler, self._timing, detach=detach)

    @staticmethod
    def _stop_hub(hub: pykka.ActorRef[Any], scheduler: Scheduler, timing: Timing, *,
                  detach: bool) -> None:
        reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
        deadline = time.monotonic() + timing.graceful_close + 2 * SHUTDOWN_MARGIN
        try:
            hub.tell(StopHub(reply, detach))
            reply.get(timeout=timing.graceful_close + SHUTDOWN_MARGIN)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        try:
            hub.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except pykka.Timeout:
            pass  # a daemon thread: it cannot keep the process alive
        scheduler.stop(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> ManagedParallelSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

