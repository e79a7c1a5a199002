"""The local backtest simulator: a protocol-faithful server with fault injection.

It is both the embedded default of the command-line job (try the library with
no key and no network) and the harness every actor test runs against over
real sockets.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from types import TracebackType

from .chain import Chain, Expected
from .faults import Faults
from .server import (
    REAL_SERVER_LIVENESS,
    STATS_HISTORY,
    ServerLimits,
    ServerLiveness,
    SessionStats,
    SimulatorServer,
)

DEFAULT_API_KEY = "local-dev-key"


class LocalSimulator:
    """A simulator serving on ``host:port`` (``port=0``: a free port) in a thread.

    Use it as a context manager; :attr:`url` is the control URL.

    It behaves as a real server does towards its peers (see
    :mod:`protocol.simulator.server`): it pings idle connections and closes one
    silent for ``liveness.keepalive_deadline`` (local default 3 s; a real
    server's is 45 s, :data:`REAL_SERVER_LIVENESS`), a dead owner loses its
    session, and a reader that is alive but does not drain holds its session
    back for ``liveness.stall_timeout`` at most (default 30 s). PubSub needs no
    key: the session id is the capability.
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY, seed: int = 0, slots: int = 2000,
                 host: str = "127.0.0.1", port: int = 0, *, txs_per_slot: int = 4,
                 limits: ServerLimits | None = None, liveness: ServerLiveness | None = None,
                 extra_api_keys: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``liveness`` sets the server's keepalive (default :class:`ServerLiveness`:
        ping after 1 s idle, dead after 3 s of silence, a stalled reader closed
        after 30 s); ``extra_api_keys`` are
        accepted too (each owns the sessions it creates); ``ssl_context`` serves
        ``wss://``."""
        self.chain = Chain(seed, slots, txs_per_slot=txs_per_slot)
        self.liveness = liveness or ServerLiveness()
        self._server = SimulatorServer(self.chain, api_key, host, port, limits=limits,
                                       liveness=self.liveness, extra_api_keys=extra_api_keys,
                                       ssl_context=ssl_context)
        self._scheme = "ws" if ssl_context is None else "wss"
        self.faults = Faults(self._server)
        self.host = host
        self._started = False

    def start(self) -> LocalSimulator:
        if not self._started:
            self._server.start()
            self._started = True
        return self

    def close(self) -> None:
        """Stop serving; drops every connection, leaves no thread or socket behind."""
        if self._started:
            self._started = False
            self._server.stop()

    def __enter__(self) -> LocalSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}/backtest"

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.chain.addresses

    def available_range(self) -> tuple[int, int]:
        return self.chain.available_range()

    def expected(self, start_slot: int, end_slot: int, *, transactions: Iterable[str] = (),
                 account_diffs: Iterable[str] = ()) -> Expected:
        return self.chain.expected(start_slot, end_slot, transactions=transactions,
                                   account_diffs=account_diffs)

    def session_stats(self, session_id: str) -> SessionStats:
        """Server-side counters of one session (continues received, blocks executed).

        Live sessions and the last ``STATS_HISTORY`` finished ones; KeyError otherwise."""
        stats: SessionStats = self._server.call(lambda: self._server.session_stats(session_id))
        return stats

    def session_ids(self) -> list[str]:
        return list(self._server.call(lambda: list(self._server.sessions)))

    def upgrade_requests(self) -> dict[str, int]:
        """WebSocket upgrade requests seen, by role (``control``/``pubsub``)."""
        return dict(self._server.call(lambda: dict(self._server.upgrade_requests)))

    def liveness_counts(self) -> dict[str, int]:
        """What the server's keepalive and flow control did: ``pings`` written, ``dead``
        and ``stalled`` connections closed, ``owners_lost`` (sessions whose owner was
        found dead) and ``commands_refused`` (commands from a connection without
        ownership, never executed)."""
        return dict(self._server.call(lambda: self._server.liveness_counts.as_dict()))

    def fault_counts(self) -> dict[str, int]:
        """Faults applied, by kind, plus connections refused by the per-client limit."""
        return dict(self._server.call(lambda: {
            **self._server.fault_counts.as_dict(), **self._server.fault_counts_limits}))


__all__ = ["DEFAULT_API_KEY", "REAL_SERVER_LIVENESS", "STATS_HISTORY", "Chain", "Expected",
           "Faults", "LocalSimulator", "ServerLimits", "ServerLiveness", "SessionStats"]
