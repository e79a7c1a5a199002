"""AsyncParallelSession: the parallel session for asyncio applications.

The same sub-sessions as :class:`~actors.frontdoors.parallel.ManagedParallelSession`
(one control socket, each sub-session a whole session), each handed out as an
:class:`AsyncParallelSubSession`: the asyncio front door (``await next_event()``,
``async for``, ``await send_continue()``, ``await send_continue_to()``,
``await advance_to_discovery()``) over that sub-session. Starting and shutting
down block on the actors' answers, so they run off the event loop.
"""

from __future__ import annotations

from typing import Any

from protocol import ContinueParams, ContinueToParams, CreateSession

from ..events import ManagedEvent, ManagedSessionError, SessionInfo
from .aio import AsyncBacktestSession, _off_loop
from .parallel import ManagedParallelSession, ParallelSubSession, ranged


class AsyncParallelSubSession(AsyncBacktestSession):
    """One sub-session through the asyncio front door; ``range`` and ``info`` as
    :class:`~actors.frontdoors.parallel.ParallelSubSession`'s."""

    def __init__(self, sub: ParallelSubSession) -> None:
        super().__init__(sub._core)
        self.range = sub.range

    @property
    def info(self) -> SessionInfo:
        """Its identity: ``session_id`` and the ``rpc_endpoint`` of its PubSub streams."""
        return self.session_info

    async def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """As the asyncio front door's; a failure names this sub-session's range."""
        try:
            return await super().next_event(timeout)
        except ManagedSessionError as exc:
            raise ranged(exc, self.range) from exc

    async def _send(self, params: ContinueParams | ContinueToParams | None,
                    timeout: float | None) -> None:
        try:
            await super()._send(params, timeout)
        except ManagedSessionError as exc:
            raise ranged(exc, self.range) from exc


class AsyncParallelSession:
    """Make one with ``await AsyncParallelSession.start(...)``; take its sub-sessions once."""

    def __init__(self, parallel: ManagedParallelSession) -> None:
        self._parallel = parallel

    @classmethod
    async def start(cls, url: str, api_key: str, create: CreateSession,
                    **options: Any) -> AsyncParallelSession:
        """As ``ManagedParallelSession.start`` (same arguments), without blocking the loop."""
        parallel = await _off_loop(lambda: ManagedParallelSession.start(url, api_key, create,
                                                                        **options))
        return cls(parallel)

    @property
    def control_session_id(self) -> str:
        """The server's name of the parallel control session."""
        return self._parallel.control_session_id

    def take_sub_sessions(self) -> list[AsyncParallelSubSession]:
        """The sub-sessions, in range order; once: later calls return an empty list."""
        return [AsyncParallelSubSession(sub) for sub in self._parallel.take_sub_sessions()]

    async def shutdown(self, *, detach: bool = False) -> None:
        """Close every sub-session, then the shared control; idempotent, never raises."""
        await _off_loop(lambda: self._parallel.shutdown(detach=detach))

    async def __aenter__(self) -> AsyncParallelSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()
