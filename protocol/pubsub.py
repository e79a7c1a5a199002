"""PubSub (JSON-RPC 2.0) messages on ``/backtest/<session_id>``.

Two streams are supported, as in the reference client: ``transactionSubscribe``
(filter ``{"mentions": [address]}``) and ``accountDiffSubscribe`` (filter: the
account address). ``replay_from_slot`` is inclusive (protocol/WIRE.md).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

StreamKind = Literal["transactions", "account_diffs", "actions"]
# The one "address" of the action stream, which has no filter (a client's bookkeeping
# keys everything by address; this is never sent).
ACTIONS_ADDRESS = "*actions"

SUBSCRIBE_METHODS: dict[str, StreamKind] = {
    "transactionSubscribe": "transactions",
    "accountDiffSubscribe": "account_diffs",
}
UNSUBSCRIBE_METHODS: dict[str, StreamKind] = {
    "transactionUnsubscribe": "transactions", "accountDiffUnsubscribe": "account_diffs",
    "actionUnsubscribe": "actions"}
NOTIFICATION_METHOD: dict[StreamKind, str] = {
    "transactions": "transactionNotification",
    "account_diffs": "accountDiffNotification",
    "actions": "actionNotification",
}

# "Subscription events are buffered for the last 100 slots" (protocol/WIRE.md): how far
# back a ``replayFromSlot`` can reach, so how long a client must remember what it saw.
PUBSUB_BUFFER_SLOTS = 100

# JSON-RPC 2.0 error codes the simulator uses.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


@attrs.frozen
class Subscribe:
    """One subscribe request; ``kind`` picks the method."""

    id: int
    kind: StreamKind
    address: str
    replay_from_slot: int | None = None


@attrs.frozen
class Unsubscribe:
    """``transactionUnsubscribe`` / ``accountDiffUnsubscribe`` of ``subscription``."""

    id: int
    kind: StreamKind
    subscription: int


@attrs.frozen
class SubscribeAck:
    """The answer to subscribe request ``id``: notifications carry ``subscription``."""

    id: int
    subscription: int


@attrs.frozen
class UnsubscribeAck:
    """The answer to unsubscribe request ``id``."""

    id: int
    result: bool


@attrs.frozen
class JsonRpcError:
    """A JSON-RPC error answer (``id`` None: the request could not be parsed)."""

    id: int | None
    code: int
    message: str


@attrs.frozen
class TransactionNotification:
    """``index``: the transaction's position in its block, when the server sends it.

    A replay after a reconnect comes address after address; the position is
    what puts the items of one slot back in execution order (see
    :mod:`actors.supervision.subscription`). Optional on the wire (``"index"``).
    """

    subscription: int
    slot: int
    signature: str
    transaction: Any = None
    meta: Any = None
    index: int | None = None


@attrs.frozen
class AccountDiffNotification:
    """``write_index``: the write's position among the slot's account writes, when
    the server sends it (``"writeIndex"``); the same role as a transaction's ``index``."""

    subscription: int
    slot: int
    account: str
    signature: str
    pre: Any = None
    post: Any = None
    write_index: int | None = None


@attrs.frozen
class UnknownPubsub:
    """A PubSub method this client does not know: kept, never an exception."""

    method: str
    params: Any = None


@attrs.frozen
class ActionSubscribe:
    """``actionSubscribe``: the results of the session's scheduled actions
    (``CreateSession.actions``), one notification each, in order. No filter: one
    subscription per connection sees them all; ``replay_from_slot`` as for the others.
    """

    id: int
    replay_from_slot: int | None = None


@attrs.frozen
class ActionResultNotification:
    """``actionNotification``: scheduled action ``action_index`` (its place in
    ``CreateSession.actions``) ran after the block of ``slot``: ``status``
    (``"executed"``, or the server's word for a failure, with ``error``) and the
    signatures of its transactions."""

    subscription: int
    slot: int
    action_index: int
    label: str = ""
    signatures: tuple[str, ...] = ()
    status: str = "executed"
    error: str | None = None


ACTION_SUBSCRIBE = "actionSubscribe"
ACTION_NOTIFICATION = "actionNotification"

PubsubRequest = Subscribe | Unsubscribe | ActionSubscribe
PubsubMessage = (
    SubscribeAck
    | UnsubscribeAck
    | JsonRpcError
    | TransactionNotification
    | AccountDiffNotification
    | ActionResultNotification
    | UnknownPubsub
)
