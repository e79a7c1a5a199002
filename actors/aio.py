"""AsyncBacktestSession: the asyncio front door.

The same supervisor and messages as the blocking :class:`ManagedBacktestSession`
(it wraps one); only the waiting differs. A take or a continue carries a
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

``start``/``attach`` and ``shutdown`` wait for the session's threads to start
and to end. That happens once per session, on a short-lived thread whose end
the loop awaits (it ends right after answering), so the loop never blocks.
``subscribe_*``, ``status``, ``stats`` and ``cursor`` are answered by the
supervisor at once (it never blocks) and are plain calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pykka

from protocol import ContinueParams, CreateSession

from .config import TAKE_BATCH
from .cursor import Cursor
from .events import (
    Completed,
    ConnectionStatus,
    ManagedEvent,
    ManagedSessionError,
    SessionInfo,
)
from .requests import TakeEvents
from .session import ManagedBacktestSession, _check_timeout, _with_deltas
from .stats import SessionStats

T = TypeVar("T")


class _LoopFuture(pykka.ThreadingFuture[Any]):
    """A pykka future that tells an asyncio loop when it is answered."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 callback: Callable[[_LoopFuture], None]) -> None:
        super().__init__()
        self._loop = loop
        self._callback = callback

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._notify()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info)
        self._notify()

    def _notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._callback, self)
        except RuntimeError:
            pass  # the loop is closed: nobody can await the answer any more


async def _off_loop(work: Callable[[], T], orphaned: Callable[[T], None]) -> T:
    """Run a blocking, once-per-session step on its own short-lived thread.

    If the awaiting task was cancelled meanwhile, ``orphaned`` gets the result
    (on a thread again: it blocks too), so a session started for nobody is closed.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            if result is not None:
                threading.Thread(target=orphaned, args=(result,), daemon=True).start()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - raised in the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
            return
        try:
            loop.call_soon_threadsafe(settle, result, None)
        except RuntimeError:  # the loop is gone
            orphaned(result)

    threading.Thread(target=run, name="backtest-async-step", daemon=True).start()
    return await done


class AsyncBacktestSession:
    """A managed session for asyncio code: ``async with``, ``async for``, ``await``."""

    def __init__(self, session: ManagedBacktestSession) -> None:
        self._session = session
        self._loop = asyncio.get_running_loop()
        self._take: _LoopFuture | None = None  # the take the supervisor holds, if any
        self._arrived = asyncio.Event()
        self._error: BaseException | None = None
        self._completed = False

    @classmethod
    async def start(cls, url: str, api_key: str, create: CreateSession,
                    **options: Any) -> AsyncBacktestSession:
        """Create a session; the arguments are those of ``ManagedBacktestSession.start``
        (``listener`` excepted: events come through this facade)."""
        _no_listener(options)
        session = await _off_loop(
            lambda: ManagedBacktestSession.start(url, api_key, create, **options),
            lambda orphan: orphan.shutdown())
        return cls(session)

    @classmethod
    async def attach(cls, url: str, api_key: str, cursor: Cursor,
                     **options: Any) -> AsyncBacktestSession:
        """Resume a session from a cursor (see ``ManagedBacktestSession.attach``)."""
        _no_listener(options)
        session = await _off_loop(
            lambda: ManagedBacktestSession.attach(url, api_key, cursor, **options),
            lambda orphan: orphan.detach())  # an attach nobody awaits leaves it resumable
        return cls(session)

    # --- identity, status, subscriptions: answered at once ------

    @property
    def session_info(self) -> SessionInfo:
        """The session's identity (id, RPC endpoint), known once ``start`` returned."""
        return self._session.session_info

    def status(self) -> dict[str, ConnectionStatus]:
        """Each connection's status, by name."""
        return self._session.status()

    def stats(self) -> SessionStats:
        """Counters, typed (:class:`~actors.stats.SessionStats`; also read as a dict)."""
        return self._session.stats()

    def cursor(self) -> Cursor:
        """Where to resume: right after the last event a call returned."""
        return self._session.cursor()

    def subscribe_transactions(self, addresses: Iterable[str]) -> None:
        """Subscribe before the first continue so the first slot is captured."""
        self._session.subscribe_transactions(addresses)

    def subscribe_account_diffs(self, addresses: Iterable[str]) -> None:
        """Deliver every write to one of these accounts (see the blocking facade's)."""
        self._session.subscribe_account_diffs(addresses)

    # --- events and continues ------

    async def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """The next event; ``TimeoutError`` if none within ``timeout`` seconds.

        Raises the session's ``ManagedSessionError`` once it cannot go on, after
        every event that came before. Cancel-safe (see the module docstring).
        """
        wait = _check_timeout(timeout)
        session = self._session
        session._apply_returned()
        if not session._taken and self._error is None:
            if self._take is None:
                self._take = _LoopFuture(self._loop, self._landed)
                session._tell(TakeEvents(self._take, TAKE_BATCH))
            self._arrived.clear()
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancellation that lands as the awaited thing completes.
                async with asyncio.timeout(wait):
                    await self._arrived.wait()
            except TimeoutError:
                raise TimeoutError(f"no event within {timeout}s") from None
        if not session._taken:
            assert self._error is not None
            raise self._error
        pair = session._taken.popleft()
        session._returned = pair
        return pair[0]

    def _landed(self, reply: _LoopFuture) -> None:
        """On the loop: a take was answered (events, or the session's error)."""
        if reply is self._take:
            self._take = None
        try:
            self._session._taken.extend(_with_deltas(reply.get(timeout=0)))
        except Exception as exc:  # noqa: BLE001 - the session's error: sticky
            self._error = exc
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
        wait = _check_timeout(timeout)
        written: asyncio.Future[None] = self._loop.create_future()
        previous: list[Any] = []

        def answered(reply: _LoopFuture) -> None:
            try:
                reply.get(timeout=0)
            except ManagedSessionError as exc:
                self._session._continue_refused(exc, previous[0])
                if not written.done():
                    written.set_exception(exc)
                return
            if not written.done():
                written.set_result(None)

        previous.append(self._session._hand_over_continue(
            params, _LoopFuture(self._loop, answered)))
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(written)
        except TimeoutError:
            raise TimeoutError(f"continue not written within {timeout}s") from None

    # --- shutdown ------

    async def shutdown(self, *, detach: bool = False) -> None:
        """Close everything (``detach``: leave the session on the server to resume);
        idempotent, never raises, bounded by ``graceful_close`` + 1 s."""
        await _off_loop(lambda: self._session.shutdown(detach=detach), lambda _: None)

    async def detach(self) -> None:
        """Close the connections, leave the session on the server (resume it with
        ``attach`` and ``cursor()``)."""
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
