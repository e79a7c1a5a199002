"""The reference's lower-level handles: a control connection alone, a subscription alone.

The Rust crate's ``managed`` module exposes, beside the managed session,
``spawn_control_manager`` → ``ControlHandle`` and
``spawn_transaction_subscription_manager`` /
``spawn_account_diff_subscription_manager`` → ``SubscriptionHandle``. Here they
are the same supervisor and connection actors as :class:`ManagedBacktestSession`
(nothing is written twice), started with fewer links:

* :func:`spawn_control`: the supervisor with only its control link. It creates
  (or, from a :class:`~actors.decisions.cursor.Cursor`, attaches to) a session, keeps the
  control connection alive (attach + resume after a drop, lost continues
  settled), and never runs ahead of subscriptions because it has none.
* :func:`spawn_transaction_subscription` / :func:`spawn_account_diff_subscription`:
  the supervisor with no control link and one subscription link, to a session
  that someone else drives (another process, another machine). It keeps the
  PubSub connection alive, re-subscribes with ``replayFromSlot`` after a drop
  and removes replayed duplicates.

What a subscription handle cannot do, and why: it does not see the session's
progress (that is on the control connection it does not have), so it cannot
hold the session back while it is disconnected, nor tell a gap. Its only
margin is the server's replay buffer (100 slots): a driver that runs more than
that past a subscription handle's outage loses that handle's events. A driver
that must never lose them subscribes itself (the managed session's horizon
gate holds it back), or keeps its continues small and checks on the watcher.
It has no ``Completed`` either: it ends when the caller shuts it down (or with
the session's error, e.g. once the server forgets the session).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attrs
import pykka

from protocol import ContinueParams, ContinueToParams, CreateSession
from protocol.pubsub import StreamKind

from ..decisions.cursor import Cursor, StreamCursor, check_cursor
from ..events import ConnectionStatus, ManagedEvent, SessionInfo
from ..requests import SubscribeStream
from ..stats import SessionStats
from .blocking import ManagedBacktestSession
from .consumer import SessionCore, SessionOptions


class _Handle:
    """What both handles share: events, status, stats, shutdown (one session facade)."""

    def __init__(self, session: ManagedBacktestSession) -> None:
        self._session = session

    @property
    def session_info(self) -> SessionInfo:
        """The session's id and RPC endpoint (give them to a subscription handle)."""
        return self._session.session_info

    @property
    def supervisor(self) -> pykka.ActorRef[Any]:
        """The supervisor actor, for application actors that tell/ask it."""
        return self._session.supervisor

    def next_event(self, timeout: float | None = None) -> ManagedEvent:
        """The next event (see :meth:`ManagedBacktestSession.next_event`)."""
        return self._session.next_event(timeout)

    def __iter__(self) -> Iterator[ManagedEvent]:
        """Events as they come, until ``Completed`` (included) or the session's error."""
        return iter(self._session)

    def status(self) -> dict[str, ConnectionStatus]:
        """Each connection's status, by name."""
        return self._session.status()

    def stats(self) -> SessionStats:
        """Counters, typed (:class:`~actors.stats.SessionStats`; also read as a dict)."""
        return self._session.stats()

    def shutdown(self) -> None:
        """Close everything; idempotent, never raises, bounded by ``graceful_close``."""
        self._session.shutdown()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


class ControlHandle(_Handle):
    """A supervised control connection alone (the reference's ``ControlHandle``)."""

    def send_continue(self, params: ContinueParams | None = None,
                      timeout: float | None = None) -> None:
        """Write a continue (see :meth:`ManagedBacktestSession.send_continue`)."""
        self._session.send_continue(params, timeout)

    def send_continue_to(self, params: ContinueToParams, timeout: float | None = None) -> None:
        """Write a continue-to (see :meth:`ManagedBacktestSession.send_continue_to`)."""
        self._session.send_continue_to(params, timeout)

    def cursor(self) -> Cursor:
        """Where to resume: give it to :func:`spawn_control` (or ``attach``) later."""
        return self._session.cursor()

    def detach(self) -> None:
        """Close the connection, leave the session on the server (to resume it)."""
        self._session.detach()


class SubscriptionHandle(_Handle):
    """A supervised subscription alone (the reference's ``SubscriptionHandle``)."""

    def __init__(self, session: ManagedBacktestSession, kind: StreamKind) -> None:
        super().__init__(session)
        self._kind = kind

    @property
    def kind(self) -> StreamKind:
        """``"transactions"`` or ``"account_diffs"``."""
        return self._kind


def spawn_control(url: str, api_key: str, session: CreateSession | Cursor,
                  **options: Any) -> ControlHandle:
    """Create a session (``CreateSession``) or attach to one (``Cursor``), control only.

    ``options`` are those of :meth:`ManagedBacktestSession.start` (policy,
    timing, listener, max_queue, sslopt, max_frame_size, on_lost_continue,
    on_starting). Returns once the session exists (or is attached);
    ``ManagedSessionError(kind="create"/"attach")`` otherwise.

    Unlike the managed session, ``Completed`` does not close the session on
    the server: subscribers in other processes may still be replaying its
    tail. It is closed by :meth:`ControlHandle.shutdown` (or left to resume
    by :meth:`ControlHandle.detach`).
    """
    if isinstance(session, Cursor):
        if session.streams:
            raise ValueError("session: a control handle has no subscriptions; this cursor "
                             f"has streams {sorted(session.streams)} (attach it with "
                             "ManagedBacktestSession.attach)")
        core = SessionCore.resume(url, api_key, session,
                                  SessionOptions(close_at_completed=False, **options))
        return ControlHandle(ManagedBacktestSession.from_core(core))
    if not isinstance(session, CreateSession):
        raise TypeError(f"session: expected CreateSession or Cursor, got "
                        f"{type(session).__name__}")
    attrs.validate(session)
    core = SessionCore.launch(url, api_key, session, None,
                              SessionOptions(close_at_completed=False, **options))
    return ControlHandle(ManagedBacktestSession.from_core(core))


def spawn_transaction_subscription(rpc_endpoint: str | SessionInfo, addresses: Iterable[str],
                                   *, replay_from_slot: int | None = None,
                                   **options: Any) -> SubscriptionHandle:
    """Subscribe to the transactions of a session someone else drives.

    ``rpc_endpoint`` is the session's RPC URL (``SessionInfo.rpc_endpoint``; the
    PubSub URL is derived from it, http → ws) or its ``SessionInfo``. With
    ``replay_from_slot`` the first subscribe replays from that slot (inclusive,
    as far as the server's 100-slot buffer reaches); without it, events start
    now. After a drop the link re-subscribes from the last slot it delivered.
    ``options``: policy, timing, max_queue, sslopt, max_frame_size, listener.
    No API key: PubSub needs none.
    """
    return _spawn_subscription("transactions", rpc_endpoint, addresses, replay_from_slot,
                               options)


def spawn_account_diff_subscription(rpc_endpoint: str | SessionInfo, addresses: Iterable[str],
                                    *, replay_from_slot: int | None = None,
                                    **options: Any) -> SubscriptionHandle:
    """Subscribe to the account diffs of a session someone else drives; see
    :func:`spawn_transaction_subscription`."""
    return _spawn_subscription("account_diffs", rpc_endpoint, addresses, replay_from_slot,
                               options)


def _spawn_subscription(kind: StreamKind, endpoint: str | SessionInfo, addresses: Iterable[str],
                        replay_from_slot: int | None, options: dict[str, Any]
                        ) -> SubscriptionHandle:
    info = _checked_info(endpoint)
    if replay_from_slot is not None and (type(replay_from_slot) is not int
                                         or replay_from_slot < 0):
        raise ValueError(f"replay_from_slot: expected a slot (int >= 0), got "
                         f"{replay_from_slot!r}")
    unknown = set(options) - {"policy", "timing", "max_queue", "sslopt", "max_frame_size",
                              "listener"}
    if unknown:
        raise TypeError(f"{', '.join(sorted(unknown))}: not an option of a subscription "
                        "handle")
    # Validated here, in the caller's thread, before anything connects.
    subscribe = SubscribeStream(kind, addresses)
    streams: dict[str, StreamCursor] = {}
    if replay_from_slot is not None:
        streams[kind] = StreamCursor(
            subscribe.addresses, dict.fromkeys(subscribe.addresses, replay_from_slot), -1)
    # The cursor only names the session and the first replay. Returns once the
    # link is subscribed (every address acknowledged, a replay complete).
    start = replay_from_slot or 0
    cursor = check_cursor(Cursor("", info.session_id, info.rpc_endpoint, start, start,
                                 streams=streams))
    core = SessionCore.launch("", "", cursor.create, cursor,
                              SessionOptions(control=False, subscriptions=(subscribe,),
                                             **options))
    return SubscriptionHandle(ManagedBacktestSession.from_core(core), kind)


def _checked_info(endpoint: object) -> SessionInfo:
    """The session a subscription handle watches, checked before anything connects."""
    if isinstance(endpoint, SessionInfo):
        url, session_id = endpoint.rpc_endpoint, endpoint.session_id
    elif isinstance(endpoint, str):
        url, session_id = endpoint, None
    else:
        raise TypeError(f"rpc_endpoint: expected a URL (str) or SessionInfo, got "
                        f"{type(endpoint).__name__}")
    parts = urlsplit(url) if isinstance(url, str) else None
    last = parts.path.rstrip("/").rsplit("/", 1)[-1] if parts else ""
    if (parts is None or parts.scheme not in ("http", "https", "ws", "wss")
            or not parts.netloc or not last or last == "backtest"):
        raise ValueError(f"rpc_endpoint: expected the session's RPC URL "
                         f"(http(s)://host/.../<session id>, SessionInfo.rpc_endpoint), "
                         f"got {url!r}")
    if session_id is not None and (not isinstance(session_id, str) or not session_id):
        raise ValueError(f"rpc_endpoint: the SessionInfo has no session id ({session_id!r})")
    return SessionInfo(session_id or last, url)


__all__ = ["ControlHandle", "SubscriptionHandle", "spawn_account_diff_subscription",
           "spawn_control", "spawn_transaction_subscription"]
