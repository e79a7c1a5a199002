"""What application actors (and the blocking facade) tell or ask a session's supervisor.

These are the public half of :class:`~actors.supervision.supervisor.SessionSupervisor`'s
messages, kept apart so that an application imports them without the actor;
the supervisor's private timer messages stay beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, get_args

import attrs

from protocol import ContinueParams, ContinueToParams
from protocol.messages import pubkey_problem
from protocol.pubsub import ACTIONS_ADDRESS, StreamKind

from .events import ManagedEvent, ManagedSessionError

if TYPE_CHECKING:  # annotations only: the plain classes below the actors import these
    import pykka


@attrs.frozen
class SendContinue:
    """Hand a continue (``ContinueParams``) or a continue-to (``ContinueToParams``) to the
    session; ``reply`` (optional) resolves once it is written.

    A refusal (one is outstanding, the session is over, a continue-to target that
    is not ahead of the session or past its range) fails ``reply``; without one
    it is logged and a listener is told a :class:`ContinueRefused`.
    """

    params: ContinueParams | ContinueToParams = attrs.field(
        validator=attrs.validators.instance_of((ContinueParams, ContinueToParams)))
    reply: pykka.Future[None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ContinueRefused:
    """Told to a listener when a ``SendContinue`` without ``reply`` was refused."""

    params: ContinueParams | ContinueToParams
    error: ManagedSessionError = attrs.field(eq=False)


@attrs.frozen
class GetStatus:
    """``ask`` it: a dict of connection name -> ConnectionStatus."""


@attrs.frozen
class GetStats:
    """``ask`` it: a :class:`~actors.stats.SessionStats` (reconnects, duplicates by
    kind, continues, gaps, ...)."""


@attrs.frozen
class GetCursor:
    """``ask`` it (listener sessions): the :class:`~actors.decisions.cursor.Cursor` after the last
    event told to the listener (None for a session whose events are taken)."""


def _stream_kind(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in get_args(StreamKind):
        raise ValueError(f"{attribute.name}: expected one of {get_args(StreamKind)}, "
                         f"got {value!r}")


def _address_tuple(addresses: Any) -> tuple[str, ...]:
    """Base58 public keys only: the server would refuse anything else after the upgrade,
    so a bad one is refused here, naming it, before any connection is made."""
    if addresses == (ACTIONS_ADDRESS,):
        return (ACTIONS_ADDRESS,)  # the action stream's own (SubscribeStream.actions())
    if isinstance(addresses, str | bytes):
        raise TypeError("addresses: expected a list of addresses, got one string")
    try:
        out = tuple(addresses)
    except TypeError:
        raise TypeError(f"addresses: expected a list of addresses, got "
                        f"{type(addresses).__name__}") from None
    if not out:
        raise ValueError("addresses: at least one address is needed")
    for i, address in enumerate(out):
        problem = pubkey_problem(address)
        if problem is not None:
            raise ValueError(f"addresses[{i}]: {problem}")
    if len(set(out)) != len(out):
        raise ValueError("addresses: duplicate addresses")
    return out


@attrs.frozen
class SubscribeStream:
    """``ask`` it: start a subscription link for ``kind`` over ``addresses``.

    ``kind`` is ``"transactions"`` (transactions mentioning an address) or
    ``"account_diffs"`` (writes to an account); :meth:`transactions` and
    :meth:`account_diffs` build one without the literal. ``addresses``: any
    iterable of base58 public keys, checked on construction (a bad one raises
    ``ValueError`` naming its index, before anything is sent). Answered ``None``
    once the link is started; subscribe before the first continue to capture
    the first block. Cost: one PubSub connection per kind, one subscribe per
    address.
    """

    kind: StreamKind = attrs.field(validator=_stream_kind)
    addresses: tuple[str, ...] = attrs.field(converter=_address_tuple)

    @classmethod
    def transactions(cls, addresses: Iterable[str]) -> SubscribeStream:
        """``SubscribeStream("transactions", addresses)``: any iterable of addresses."""
        return cls("transactions", addresses)

    @classmethod
    def account_diffs(cls, addresses: Iterable[str]) -> SubscribeStream:
        """``SubscribeStream("account_diffs", addresses)``: any iterable of addresses."""
        return cls("account_diffs", addresses)

    @classmethod
    def actions(cls) -> SubscribeStream:
        """The results of the session's scheduled actions (no addresses: one stream)."""
        return cls("actions", (ACTIONS_ADDRESS,))

    def __attrs_post_init__(self) -> None:
        if (self.kind == "actions") != (self.addresses == (ACTIONS_ADDRESS,)):
            raise ValueError("addresses: the action stream takes none "
                             "(SubscribeStream.actions())")


@attrs.frozen
class UnsubscribeStream:
    """Tell it: close the subscription of ``kind`` on a running session.

    Clean, not abrupt: every item of the blocks executed before ``reply``
    resolves is delivered first (one ping/pong barrier on that connection;
    no continue is written meanwhile), none after. Then a
    ``ConnectionChanged(kind, Closed())`` is delivered and ``reply`` resolves
    (``None``); a stream not subscribed fails it with ``ValueError``, a session
    that is over with ``ManagedSessionError``. The kind may be subscribed again
    later (a new subscription: it captures what runs after it).
    """

    kind: StreamKind = attrs.field(validator=_stream_kind)
    reply: pykka.Future[None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ListenerAttached:
    """The first message a ``listener`` actor gets, before any event: the session's
    supervisor, to ``tell``/``ask`` (``SendContinue``, ``GetStats``...). No event
    can come before it, so a listener never has to hold a ``ReadyForContinue``
    until it learns where to answer."""

    supervisor: pykka.ActorRef[Any] = attrs.field(eq=False)


@attrs.frozen
class TakeEvents:
    """Complete ``reply`` with up to ``limit`` events (at least one) or the session's error.

    Taking a batch per round trip instead of one event is what keeps the
    facade from being the slowest hop.
    """

    reply: pykka.Future[list[ManagedEvent]] = attrs.field(eq=False)
    limit: int = 1


@attrs.frozen
class CancelTake:
    """``ask`` it: True if the take was withdrawn before events were put in it."""

    reply: pykka.Future[list[ManagedEvent]] = attrs.field(eq=False)


@attrs.frozen
class Shutdown:
    """Close everything; ``reply`` resolves with the child refs once they have stopped."""

    reply: pykka.Future[list[pykka.ActorRef[Any]]] = attrs.field(eq=False)
    detach: bool = False  # leave the session on the server (closeBacktestSession not sent)
