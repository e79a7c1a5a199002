"""AsyncBacktestSession: the asyncio front door.

The same supervisor, messages and consumer core
(:class:`~actors.frontdoors.consumer.SessionCore`) as the blocking
:class:`~actors.ManagedBacktestSession`; only the waiting differs. A take or a continue carries a
:class:`_LoopFuture`, a pykka future whose ``set`` also schedules a callback on
the event loop (``call_soon_threadsafe``). So an ``await`` costs no thread and
no polling: the supervisor's thread hands the answer to the loop.

Cancellation never loses or repeats anything:

* Cancelling a task that awaits :meth:`~AsyncBacktestSession.next_event` (or an
  ``async for``) only ends the wait. The take stays with the supervisor; its
  batch, whenever it comes, lands in this facade's buffer on the loop, and the
  next call returns it. An event is counted as the application's (in
  :meth:`cursor`) only once a call returned it.
* A cancelled :meth:`~AsyncBacktestSession.send_continue` was handed over
  before the first ``await``: the continue still goes, exactly once (the
  cursor holds it as sent, as with the blocking facade). If the supervisor
  refuses it, the refusal is applied to the cursor even though nobody waits.

``start``/``attach`` await the session's identity the same way; cancelling
them shuts the attempt down (an attach is detached: the session stays
resumable). ``shutdown`` waits for the session's threads to end, once per
session, on a short-lived thread whose end the loop awaits, so the loop never
blocks. A session may be used from one loop after another (``asyncio.run``
twice): each call binds to the loop it runs on, and an answer that reached a
closed loop is picked up by the next call.
``subscribe_*``, ``status``, ``stats`` and ``cursor`` are answered by the
supervisor at once (it never blocks) and are plain calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pykka

from protocol import ContinueParams, ContinueToParams, CreateSession

from ..decisions.cursor import Cursor, check_cursor
from ..decisions.stepping import DiscoveryStep, StepInProgress
from ..events import (
    Completed,
    ConnectionStatus,
    ManagedEvent,
    SessionInfo,
)
from ..requests import SubscribeStream, TakeEvents
from ..stats import SessionStats
from ..supervision.config import TAKE_BATCH
from .consumer import (
    SessionCore,
    SessionOptions,
    check_timeout,
    initial_subscriptions,
    start_error,
    stream_requests,
)

T = TypeVar("T")


class _LoopFuture(pykka.ThreadingFuture[Any]):
    """A pykka future that tells an asyncio loop when it is answered.

    ``rebind`` moves it to another loop (the first one closed); ``claim``
    makes sure its answer is handled once, whichever loop sees it first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 callback: Callable[[_LoopFuture], None]) -> None:
        super().__init__()
        self._loop = loop
        self._callback = callback
        self._lock = threading.Lock()
        self._answered = False
        self._claimed = False

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._notify()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info)
        self._notify()

    def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call from ``loop``: from now on answers go there (one that came already
        is handled now)."""
        with self._lock:
            self._loop = loop
            answered = self._answered
        if answered:
            loop.call_soon(self._callback, self)

    def claim(self) -> bool:
        with self._lock:
            first, self._claimed = not self._claimed, True
        return first

    def _notify(self) -> None:
        with self._lock:
            self._answered = True
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._callback, self)
        except RuntimeError:
            pass  # that loop is closed: the next call, on another loop, rebinds


async def _off_loop(work: Callable[[], T]) -> T:
    """Run a blocking, once-per-session step (shutdown) on its own short-lived thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - raised in the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is gone: nobody awaits the answer

    threading.Thread(target=run, name="backtest-async-step", daemon=True).start()
    return await done


class AsyncBacktestSession:
    """A managed session for asyncio code: ``async with``, ``async for``, ``await``."""

    def __init__(self, core: SessionCore) -> None:
        self._core = core
        self._take: _LoopFuture | None = None  # the take the supervisor holds, if any
        self._arrived: asyncio.Event | None = None
        self._arrived_loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._completed = False

    @classmethod
    async def start(cls, url: str, api_key: str, create: CreateSession,
                    **options: Any) -> AsyncBacktestSession:
        """Create a session; the arguments are those of ``ManagedBacktestSession.start``
        (``listener`` excepted: events come through this facade). Cancelling the
        call shuts the attempt down."""
        _no_listener(options)
        if not isinstance(create, CreateSession):
            raise TypeError(f"create: expected CreateSession, got {type(create).__name__}")
        subscriptions = initial_subscriptions(options.pop("transactions", ()),
                                              options.pop("account_diffs", ()))
        core = await cls._started(url, api_key, create, None,
                                  SessionOptions(subscriptions=subscriptions, **options))
        return cls(core)

    @classmethod
    async def attach(cls, url: str, api_key: str, cursor: Cursor,
                     **options: Any) -> AsyncBacktestSession:
        """Resume a session from a cursor (see ``ManagedBacktestSession.attach``).
        Cancelling the call detaches: the session stays resumable."""
        _no_listener(options)
        cursor = check_cursor(cursor)
        subscribes = stream_requests(cursor)  # before connecting
        core = await cls._started(url, api_key, cursor.create, cursor, SessionOptions(**options))
        try:
            core.subscribe_again(subscribes)
        except BaseException:
            await _off_loop(lambda: core.shutdown(detach=True))
            raise
        return cls(core)

    @staticmethod
    async def _started(url: str, api_key: str, create: CreateSession, resume: Cursor | None,
                       options: SessionOptions) -> SessionCore:
        loop = asyncio.get_running_loop()
        known: asyncio.Future[None] = loop.create_future()

        def answered(_: _LoopFuture) -> None:
            if not known.done():
                known.set_result(None)

        started = _LoopFuture(loop, answered)
        core, bound = SessionCore.begin(url, api_key, create, resume, started, options)
        try:
            async with asyncio.timeout(bound):
                await known
            core.info = started.get(timeout=0)
        except BaseException as exc:
            await asyncio.shield(_off_loop(lambda: core.shutdown(detach=resume is not None)))
            raise start_error(exc, resume is not None, bound) from None
        return core

    # --- identity, status, subscriptions: answered at once ------

    @property
    def session_info(self) -> SessionInfo:
        """The session's identity (id, RPC endpoint), known once ``start`` returned."""
        return self._core.info

    def status(self) -> dict[str, ConnectionStatus]:
        """Each connection's status, by name."""
        return self._core.status()

    def stats(self) -> SessionStats:
        """Counters, typed (:class:`~actors.stats.SessionStats`; also read as a dict)."""
        return self._core.stats()

    def cursor(self) -> Cursor:
        """Where to resume: right after the last event a call returned."""
        return self._core.cursor()

    def subscribe_transactions(self, addresses: Iterable[str]) -> None:
        """Subscribe before the first continue so the first slot is captured."""
        self._core.subscribe(SubscribeStream("transactions", addresses))

    def subscribe_account_diffs(self, addresses: Iterable[str]) -> None:
        """Deliver every write to one of these accounts (see the blocking facade's)."""
        self._core.subscribe(SubscribeStream("account_diffs", addresses))

    def subscribe_actions(self) -> None:
        """Deliver each scheduled action's result (see the blocking facade's)."""
        self._core.subscribe(SubscribeStream.actions())

    # --- events and continues ------

    async def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """The next event; ``TimeoutError`` if none within ``timeout`` seconds.

        Raises the session's ``ManagedSessionError`` once it cannot go on, after
        every event that came before. Cancel-safe (see the module docstring).
        Several tasks may wait at once; each event goes to one of them.
        """
        wait = check_timeout(timeout)
        core = self._core
        core.apply_returned()
        if not core.taken and self._error is None:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancellation that lands as the awaited thing completes.
                async with asyncio.timeout(wait):
                    while not core.taken and self._error is None:
                        await self._wait_for_take(asyncio.get_running_loop())
            except TimeoutError:
                raise TimeoutError(f"no event within {timeout}s") from None
        if not core.taken:
            assert self._error is not None
            raise self._error
        return core.next_taken()

    async def _wait_for_take(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until a take lands: ask for one if none is out, on this loop."""
        if self._arrived_loop is not loop:
            self._arrived, self._arrived_loop = asyncio.Event(), loop
            if self._take is not None:
                self._take.rebind(loop)  # asked from a loop that is gone
        assert self._arrived is not None
        if self._take is None:
            take = _LoopFuture(loop, self._landed)
            self._core.tell(TakeEvents(take, TAKE_BATCH))  # raises once shut down
            self._take = take
        self._arrived.clear()
        await self._arrived.wait()

    def _landed(self, reply: _LoopFuture) -> None:
        """On the loop: a take was answered (events, or the session's error)."""
        if not reply.claim():
            return
        if reply is self._take:
            self._take = None
        try:
            self._core.add_taken(reply.get(timeout=0))
        except Exception as exc:  # noqa: BLE001 - the session's error: sticky
            self._error = exc
        if self._arrived is not None:
            self._arrived.set()

    def __aiter__(self) -> AsyncBacktestSession:
        return self

    async def __anext__(self) -> ManagedEvent:
        """Events until ``Completed`` (included); the session's error is raised."""
        if self._completed:
            raise StopAsyncIteration
        event = await self.next_event()
        self._completed = isinstance(event, Completed)
        return event

    async def send_continue(self, params: ContinueParams | None = None,
                            timeout: float | None = None) -> None:
        """Write a continue once every connection is Up; returns when it is written.

        Errors as ``ManagedBacktestSession.send_continue``. Cancelling the wait
        does not call the continue off: it was handed over already.
        """
        await self._send(params, timeout)

    async def send_continue_to(self, params: ContinueToParams,
                               timeout: float | None = None) -> None:
        """Write a continue-to; see ``ManagedBacktestSession.send_continue_to``."""
        if not isinstance(params, ContinueToParams):
            raise TypeError(f"params: expected ContinueToParams, got {type(params).__name__}")
        await self._send(params, timeout)

    async def advance_to_discovery(self, transactions: Iterable[str] = (),
                                   timeout: float | None = None) -> DiscoveryStep:
        """Pause right before the next discovered batch, or say there is none; see
        ``ManagedBacktestSession.advance_to_discovery``."""
        step = StepInProgress(self._core.stepping, transactions)  # arguments checked
        core = self._core
        try:
            core.apply_returned()
            while step.result is None:
                request = step.request()
                if request is not None:
                    await self._send(request, timeout)
                elif step.result is None:
                    step.feed(await self.next_event(timeout))
                    core.apply_returned()
            return step.result
        except BaseException:
            core.give_back(step.events)  # nothing taken is lost: the next takes return them
            raise

    async def _send(self, params: ContinueParams | ContinueToParams | None,
                    timeout: float | None) -> None:
        wait = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()

        def answered(reply: _LoopFuture) -> None:
            if not reply.claim():
                return
            self._core.settle_continues()  # a refusal reaches the cursor, awaited or not
            if written.done():
                return  # nobody waits any more
            try:
                reply.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - raised in the awaiting task
                written.set_exception(exc)
            else:
                written.set_result(None)

        self._core.hand_over_continue(params, _LoopFuture(loop, answered))
        try:
            async with asyncio.timeout(wait):
                await written  # cancelled with the task: the answer then goes nowhere
        except TimeoutError:
            raise TimeoutError(f"continue not written within {timeout}s") from None

    # --- shutdown ------

    async def shutdown(self, *, detach: bool = False) -> None:
        """Close everything (``detach``: leave the session on the server to resume);
        idempotent, never raises, bounded by ``graceful_close`` + 1 s."""
        await _off_loop(lambda: self._core.shutdown(detach=detach))

    async def detach(self) -> None:
        """Close the connections, leave the session on the server (to resume it)."""
        await self.shutdown(detach=True)

    async def __aenter__(self) -> AsyncBacktestSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


def _no_listener(options: dict[str, Any]) -> None:
    if options.get("listener") is not None:
        raise ValueError("listener: an AsyncBacktestSession delivers its events through "
                         "next_event / async for, not to a listener actor")


__all__ = ["AsyncBacktestSession"]
