"""What application actors (and the blocking facade) tell or ask a session's supervisor.

These are the public half of :class:`~actors.supervisor.SessionSupervisor`'s
messages, kept apart so that an application imports them without the actor;
the supervisor's private timer messages stay beside it.
"""

from __future__ import annotations

from typing import Any, get_args

import attrs
import pykka

from protocol import ContinueParams
from protocol.messages import pubkey_problem
from protocol.pubsub import StreamKind

from .events import ManagedEvent, ManagedSessionError


@attrs.frozen
class SendContinue:
    """Hand a continue to the session; ``reply`` (optional) resolves once it is written.

    A refusal (one is outstanding, the session is over) fails ``reply``; without
    one it is logged and a listener is told a :class:`ContinueRefused`.
    """

    params: ContinueParams = attrs.field(validator=attrs.validators.instance_of(ContinueParams))
    reply: pykka.Future[None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ContinueRefused:
    """Told to a listener when a ``SendContinue`` without ``reply`` was refused."""

    params: ContinueParams
    error: ManagedSessionError = attrs.field(eq=False)


@attrs.frozen
class GetStatus:
    """``ask`` it: a dict of connection name -> ConnectionStatus."""


@attrs.frozen
class GetStats:
    """``ask`` it: counters (reconnects, duplicates dropped, malformed frames, ...)."""


@attrs.frozen
class GetCursor:
    """``ask`` it (listener sessions): the :class:`~actors.cursor.Cursor` after the last
    event told to the listener (None for a session whose events are taken)."""


def _stream_kind(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in get_args(StreamKind):
        raise ValueError(f"{attribute.name}: expected one of {get_args(StreamKind)}, "
                         f"got {value!r}")


def _address_tuple(addresses: Any) -> tuple[str, ...]:
    """Base58 public keys only: the server would refuse anything else after the upgrade,
    so a bad one is refused here, naming it, before any connection is made."""
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

    The facade checks the addresses first (see ``subscribe_transactions``).
    """

    kind: StreamKind = attrs.field(validator=_stream_kind)
    addresses: tuple[str, ...] = attrs.field(converter=_address_tuple)


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
