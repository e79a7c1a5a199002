"""The local backtest simulator: a protocol-faithful server with fault injection.

The one I/O sub-package of :mod:`protocol`: an asyncio server on ``websockets``,
its fault injection and a TCP fault proxy (:mod:`protocol.simulator.proxy`).
A session never imports it (the command line's embedded run and
:mod:`actors.testing` start it); the top of :mod:`protocol` stays sans-I/O.

It is both the embedded default of the command-line job (try the library with
no key and no network) and the harness every actor test runs against over
real sockets.

Names: :class:`LocalSimulator` (the server), :class:`Faults` (its ``faults``),
:class:`Chain` and :class:`Expected` (the synthetic chain and what a session
over it must deliver), :class:`ServerLiveness` and :class:`ServerLimits` (its
knobs), :class:`SessionStats` (the server's counters of one session).
``DEFAULT_API_KEY``: the key it accepts by default, ``"local-dev-key"``.
``REAL_SERVER_LIVENESS``: the keepalive of a real server (15 s / 45 s), for
tests that must behave like one. ``STATS_HISTORY``: finished sessions whose
counters are kept (1,000).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..policy import ReconnectPolicy, Timing
from .chain import Chain, Expected
from .faults import Faults
from .server import (
    DEFAULT_PARALLEL_SPLIT,
    REAL_SERVER_LIVENESS,
    STATS_HISTORY,
    ServerLimits,
    ServerLiveness,
    SessionStats,
    SimulatorServer,
)

DEFAULT_API_KEY = "local-dev-key"
# What LocalSimulator.timing / .policy return (and the CLI's embedded runs use).
LOCAL_TIMING = Timing(connect=5, handshake=10, keepalive_interval=0.25, keepalive_deadline=1.0,
                      graceful_close=2)
LOCAL_POLICY = ReconnectPolicy(initial=0.05, max_delay=1.0, max_attempts=10, uptime_reset=5.0)


class LocalSimulator:
    """A backtest server on ``host:port`` in a thread of this process.

    ``with LocalSimulator(seed=1) as sim:`` starts it and stops it; :attr:`url`
    is its control URL, :attr:`timing` and :attr:`policy` the client settings
    that suit it (pass them to ``ManagedBacktestSession.start``).

    Arguments (all optional):

    * ``api_key`` (``"local-dev-key"``): the key a client must send;
      ``extra_api_keys`` (none): more accepted keys, each owning its sessions.
    * ``seed`` (0), ``slots`` (2000), ``txs_per_slot`` (4): the synthetic
      chain. The same seed gives the same chain; ``slots`` slot numbers from
      400,000,000, about one in ten skipped (no produced block); each block
      has 2..6 transactions for the default 4 (memory and CPU grow with it).
      :attr:`addresses` lists the 6 addresses it touches,
      :meth:`available_range` its first and last slot, :meth:`expected` what
      a complete session must deliver.
    * ``host`` (``"127.0.0.1"``), ``port`` (0: a free port, see :attr:`port`).
    * ``liveness`` (:class:`ServerLiveness`: ping after 1 s idle, a peer silent
      for 3 s is dead, a stalled reader closed after 30 s; a real server's is
      15 s / 45 s, :data:`REAL_SERVER_LIVENESS`). Shorter finds dead peers
      sooner and costs more pings.
    * ``limits`` (:class:`ServerLimits`: 1 MiB frames, 256 connections per
      client address, 10 s to finish an upgrade).
    * ``ssl_context`` (none): serve ``wss://`` instead of ``ws://``.
    * ``parallel_split`` (250): slots per sub-session of a parallel create
      (``CreateSession(parallel=True)``; the last one may be shorter).

    It behaves as a real server does towards its peers (see
    :mod:`protocol.simulator.server`): it pings idle connections and closes
    silent ones, a dead owner loses its session, a reader that is alive but
    does not drain holds its session back for ``liveness.stall_timeout`` at
    most. PubSub needs no key: the session id is the capability.

    :attr:`faults` (a :class:`Faults`) breaks things on purpose: ``drop``
    (abrupt close), ``blackhole`` (silence both ways), ``malformed`` (one bad
    frame), now or ``at_slot=S``; ``refuse(seconds)`` (new connects refused),
    ``delay_handshake(seconds)``, ``http_status(503)`` (the upgrade answered
    with an error), ``lose_next_continue()``. Each takes a *target*:
    ``"control"``, ``"transactions"``, ``"account_diffs"``, ``"subscriptions"``
    (both streams) or ``"all"``, and optionally a ``session_id``.
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY, seed: int = 0, slots: int = 2000,
                 host: str = "127.0.0.1", port: int = 0, *, txs_per_slot: int = 4,
                 limits: ServerLimits | None = None, liveness: ServerLiveness | None = None,
                 extra_api_keys: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None,
                 parallel_split: int = DEFAULT_PARALLEL_SPLIT) -> None:
        """See the class docstring for every argument, its default and its cost."""
        self.chain = Chain(seed, slots, txs_per_slot=txs_per_slot)
        self.liveness = liveness or ServerLiveness()
        self._server = SimulatorServer(self.chain, api_key, host, port, limits=limits,
                                       liveness=self.liveness, extra_api_keys=extra_api_keys,
                                       ssl_context=ssl_context,
                                       parallel_split=parallel_split)
        self._scheme = "ws" if ssl_context is None else "wss"
        self.faults = Faults(self._server)
        self.host = host
        self._started = False

    def start(self) -> LocalSimulator:
        """Start serving (what ``with`` does); returns ``self``. Idempotent."""
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
        """The port it listens on (the free one picked when ``port=0``)."""
        return self._server.port

    @property
    def url(self) -> str:
        """The control URL, ``ws://127.0.0.1:<port>/backtest`` (``wss://`` with TLS)."""
        return f"{self._scheme}://{self.host}:{self.port}/backtest"

    @property
    def timing(self) -> Timing:
        """Client timing that suits a server on this machine: connect 5 s, handshake
        10 s, keepalive 0.25 s, dead after 1 s of silence, close 2 s.

        The library's defaults (:class:`~protocol.Timing`: 15 s keepalive, 45 s
        deadline) are for a real network; here a dead connection is found in a
        second, so faults recover in seconds. The cost: 4 pings a second per
        connection, nothing on loopback.
        """
        return LOCAL_TIMING

    @property
    def policy(self) -> ReconnectPolicy:
        """A reconnect policy that suits it: first retry after 0.05 s, at most 1 s
        apart, 10 attempts (the defaults wait up to 30 s between attempts)."""
        return LOCAL_POLICY

    @property
    def addresses(self) -> tuple[str, ...]:
        """The 6 addresses the chain's transactions and account diffs touch (base58);
        subscribe to these (``backtest-actors simulator --list-addresses`` prints
        them)."""
        return self.chain.addresses

    def available_range(self) -> tuple[int, int]:
        """``(first, last)`` slot the chain holds; a session's range must lie within
        (else the create is answered ``bundleNotFound``)."""
        return self.chain.available_range()

    def expected(self, start_slot: int, end_slot: int, *, transactions: Iterable[str] = (),
                 account_diffs: Iterable[str] = (), discover: Sequence[str] = (),
                 inject: Sequence[str] = (), actions: Sequence[Any] = ()) -> Expected:
        """What a complete session over ``start_slot..=end_slot`` subscribed to these
        addresses must deliver: ``.slots`` (the anchor, then every produced block),
        ``.signatures`` and ``.diff_keys``, each once, in order.

        ``discover`` (program ids, see :attr:`programs`): ``.discoveries`` lists the
        ``(slot, batch_index)`` a run with those discovery filters pauses before,
        in order. ``inject``: transactions that run injects at each pause (made
        with ``user_transaction``); they appear in ``.signatures`` where they ran.
        ``actions`` (a create's ``ScheduledAction`` values): ``.actions`` lists
        ``(place, slot)``: each action and the block it runs after, in order."""
        return self.chain.expected(start_slot, end_slot, transactions=transactions,
                                   account_diffs=account_diffs, discover=discover,
                                   inject=inject, actions=actions)

    @property
    def programs(self) -> tuple[str, ...]:
        """The 3 programs the chain's transactions invoke (base58), most often first:
        about 60 %, 30 % and 10 % of transactions; a discovery filter on the last
        pauses at a few blocks in three."""
        return self.chain.programs

    def session_stats(self, session_id: str) -> SessionStats:
        """Server-side counters of one session (continues received, blocks executed).

        Live sessions and the last ``STATS_HISTORY`` finished ones; KeyError otherwise."""
        stats: SessionStats = self._server.call(lambda: self._server.session_stats(session_id))
        return stats

    def session_ids(self) -> list[str]:
        """Ids of the sessions the server holds now."""
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

    def resume_counts(self) -> dict[str, int]:
        """Reconnects as the server saw them: ``resume_handshakes`` (connections whose
        first request was an attach or a replaying subscribe) and
        ``peak_concurrent_resumes`` (the most of them under way at once, from upgrade
        to the answer; see :mod:`protocol.simulator.handshakes`)."""
        return dict(self._server.call(lambda: self._server.resume_handshakes.as_dict()))

    def fault_counts(self) -> dict[str, int]:
        """Faults applied, by kind, plus connections refused by the per-client limit."""
        return dict(self._server.call(lambda: {
            **self._server.fault_counts.as_dict(), **self._server.fault_counts_limits}))


__all__ = ["DEFAULT_API_KEY", "REAL_SERVER_LIVENESS", "STATS_HISTORY", "Chain", "Expected",
           "Faults", "LocalSimulator", "ServerLimits", "ServerLiveness", "SessionStats"]
