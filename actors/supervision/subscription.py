"""SubscriptionActor: one PubSub WebSocket for one stream kind, many addresses.

It subscribes every address (each ack bounded by ``Timing.handshake``), turns
notifications into events tagged with the address they matched, and forwards
them. A restart subscribes with ``replayFromSlot`` = the last slot the
application received for that address (inclusive: the boundary slot comes
again and the supervisor drops what was already delivered).

Order across a resume: the server replays address after address, so the
replayed items of two addresses would interleave by slot. After the last ack
the link sends a ping (``resume`` barrier); its pong comes after every replay.
Items read until then are held, sorted by (slot, position in the slot) and
forwarded in one batch, so the stream stays in execution order, within a slot
too. The position is a transaction's ``index`` in its block (a diff's
``write_index``); from a server that does not send it, the order within a slot
is the arrival order (the sort is stable). The whole replay is held, however
large: forwarding part of it early would put one address's later slots before
another's earlier ones. So while it resumes the link lends its reader the
credits the held items take (the reader must reach the resume pong) and repays
them when it forwards the batch; the replay is bounded by the server's buffer
(100 slots of this stream's items), not by ``max_queue``, for that moment.

Barriers: the supervisor asks for one to confirm a slot (and when the session
completes). The link sends a WebSocket ping carrying a token; the server answers
a ping after everything it queued before it, so the pong proves every
notification written before it has been read and forwarded.

A barrier's pong can be lost while the link lives (tungstenite, the real
server's WebSocket layer, keeps only the latest unsent pong when pings arrive
close together). A barrier holds the session's next chunk, so a lost pong must
not hold it for ever, and time alone cannot tell a lost pong from a long queue
ahead of it (a slow application pauses the reader). Order can: the pong of a
keepalive ping written *after* the barrier that comes back first proves the
barrier's pong is gone. The link then writes the barrier again, up to
``BARRIER_RESENDS`` times, and after that finds itself dead (restart with
replay). A link that goes silent is found by the keepalive deadline as always.
"""

from __future__ import annotations

from typing import Any

import attrs

from protocol import (
    AccountDiffNotification,
    ActionResultNotification,
    ActionSubscribe,
    JsonRpcError,
    ProtocolError,
    Subscribe,
    SubscribeAck,
    TransactionNotification,
    decode_pubsub,
    encode_subscribe,
)
from protocol.fastpath import twin
from protocol.pubsub import StreamKind

from ..events import AccountDiff, ActionResult, StreamEvent, Transaction
from ..runtime.connection import Pong
from .link_actor import LinkActor, keepalive_number

# --- what a subscription link reports -------------------------------------------------


@attrs.frozen
class StreamItems:
    """``(address, event)`` pairs in arrival order."""

    name: str
    generation: int
    items: list[tuple[str, StreamEvent]]


@attrs.frozen
class BarrierReached:
    name: str
    generation: int
    token: bytes


# --- what a subscription link receives ------------------------------------------------


@attrs.frozen
class Barrier:
    token: bytes


BARRIER_RESENDS = 3


@attrs.define
class _Outstanding:
    """A barrier written and not yet answered."""

    keepalives_before: int  # numbered keepalive pings written before it
    resends: int = 0


def _account_keys(transaction: Any) -> list[Any]:
    """The account keys of a JSON-encoded transaction (``message.accountKeys``, plain
    strings or ``jsonParsed`` objects with a ``pubkey``); empty for other encodings."""
    if isinstance(transaction, dict) and isinstance(transaction.get("transaction"), dict):
        transaction = transaction["transaction"]  # {"transaction": {...}, "meta": ...}
    message = transaction.get("message") if isinstance(transaction, dict) else None
    keys = message.get("accountKeys") if isinstance(message, dict) else None
    if not isinstance(keys, list):
        return []
    if keys and not isinstance(keys[0], str):  # jsonParsed: {"pubkey": ..., ...}
        return [k.get("pubkey") if isinstance(k, dict) else k for k in keys]
    return keys


class _Matcher:
    """The subscribed addresses a transaction mentions, in subscription order.

    On the hot path (every notification): the transaction's keys (usually a
    handful) are intersected with the subscribed set in C, and only a
    transaction that mentions more than the notified address is sorted, by
    subscription index (never a walk over every subscribed address: a user may
    subscribe thousands). The server notifies a transaction once per matching
    subscription, one after another; the repeats are dropped by the outbox,
    so the answer for the signature just seen is reused.
    """

    __slots__ = ("_subscribed", "_index", "_last_signature", "_last")

    def __init__(self, subscribed: tuple[str, ...]) -> None:
        self._subscribed = subscribed
        self._index = {a: i for i, a in enumerate(subscribed)}
        self._last_signature: str | None = None
        self._last: tuple[str, ...] = ()

    def __call__(self, transaction: Any, address: str, signature: str) -> tuple[str, ...]:
        if len(self._subscribed) == 1:
            return self._subscribed
        if signature == self._last_signature:
            return self._last
        keys = _account_keys(transaction)
        if len(keys) == 1 and keys[0] == address:
            return (address,)
        try:
            hits = self._index.keys() & keys
        except TypeError:  # an unhashable key (a malformed payload): compare one by one
            hits = {a for a in self._subscribed if a in keys}
        if not hits or (len(hits) == 1 and address in hits):
            matched: tuple[str, ...] = (address,)
        else:
            hits.add(address)
            matched = tuple(sorted(hits, key=self._index.__getitem__))
        self._last_signature, self._last = signature, matched
        return matched


_TX_TWIN = twin(Transaction)
_DIFF_TWIN = twin(AccountDiff)


def _to_event(item: TransactionNotification | AccountDiffNotification, address: str,
              matched: _Matcher) -> Transaction | AccountDiff:
    """The event of a notification for ``address``; a transaction names every
    subscribed address it mentions (computed from its content, so the same
    transaction gets the same ``matched`` whichever notification came first).

    Built as the codec builds a notification (protocol/fastpath.py ``twin``): one
    event per notification, and the frozen class's ``__init__`` cost as much as
    the rest of this function.
    """
    out: Any
    if isinstance(item, TransactionNotification):
        out = _TX_TWIN()
        out.slot = item.slot
        out.signature = item.signature
        out.transaction = item.transaction
        out.meta = item.meta
        out.index = item.index
        out.matched = matched(item.transaction, address, item.signature)
        out.__class__ = Transaction
        return out  # type: ignore[no-any-return]
    out = _DIFF_TWIN()
    out.slot = item.slot
    out.account = item.account
    out.signature = item.signature
    out.pre = item.pre
    out.post = item.post
    out.write_index = item.write_index
    out.__class__ = AccountDiff
    return out  # type: ignore[no-any-return]


def _execution_order(pair: tuple[str, StreamEvent]) -> tuple[int, int]:
    event = pair[1]
    # An action result has no position: one subscription replays them in order.
    position = (event.index if isinstance(event, Transaction | ActionResult)
                else event.write_index)
    return event.slot, -1 if position is None else position


class SubscriptionActor(LinkActor):
    def __init__(self, *, kind: StreamKind, addresses: tuple[str, ...],
                 replay_from: dict[str, int], **kwargs: Any) -> None:
        super().__init__(name=kind, **kwargs)
        self._kind = kind
        self._addresses = addresses
        self._matched = _Matcher(addresses)
        self._replay_from = replay_from
        self._by_subscription: dict[int, str] = {}
        self._by_request: dict[int, str] = {}
        self._resuming = bool(replay_from)  # hold items until the replay is complete
        self._resume_token: bytes | None = None
        self._held: list[tuple[str, StreamEvent]] = []
        self._lent = 0  # credits lent to the reader while the replay is held
        self._barriers: dict[bytes, _Outstanding] = {}

    # The codec's function itself, not a method calling it: the reader thread
    # calls it once per frame.
    decode = staticmethod(decode_pubsub)

    def on_opened(self) -> None:
        for request_id, address in enumerate(self._addresses, 1):
            self._by_request[request_id] = address
            try:
                self.conn.send(encode_subscribe(
                    ActionSubscribe(request_id, self._replay_from.get(address))
                    if self._kind == "actions" else Subscribe(
                        request_id, self._kind, address, self._replay_from.get(address))))
            except Exception as exc:  # noqa: BLE001 - the reader reports the broken socket
                self.log.info("subscribe write failed: %s", exc)
                return
        self.expect_handshake_answer()

    def on_items(self, items: list[Any]) -> None:
        out: list[tuple[str, StreamEvent]] = []
        malformed: list[Exception] = []
        consumed = 0
        by_subscription, matched = self._by_subscription, self._matched
        for item in items:
            # Exact types (the codec builds no subclass): nearly every item is one.
            kind = type(item)
            if kind is TransactionNotification or kind is AccountDiffNotification:
                address = by_subscription.get(item.subscription)
                if address is None:
                    consumed += 1  # a subscription this link did not make
                else:
                    out.append((address, _to_event(item, address, matched)))
            elif isinstance(item, ActionResultNotification):
                address = self._by_subscription.get(item.subscription)
                if address is None:
                    consumed += 1
                else:
                    out.append((address, ActionResult(item.slot, item.action_index, item.label,
                                                      item.signatures, item.status,
                                                      item.error)))
            elif isinstance(item, Pong):
                if item.payload and item.payload == self._resume_token:
                    self._release_held(out)
                    out = []
                    self._resuming, self._resume_token = False, None
                    self.mark_up()
                elif (number := keepalive_number(item.payload)) is not None:
                    self._keepalive_answered(number)
                elif item.payload:
                    self._flush(out, malformed, consumed)
                    out, malformed, consumed = [], [], 0
                    self._barriers.pop(item.payload, None)
                    self.report(BarrierReached(self.name, self.generation, item.payload))
            elif isinstance(item, ProtocolError):
                malformed.append(item)
            elif isinstance(item, SubscribeAck):
                consumed += 1
                self._acked(item)
            elif isinstance(item, JsonRpcError):
                address = self._by_request.get(item.id if item.id is not None else -1)
                if address is not None and address not in self._by_subscription.values():
                    self._flush(out, malformed, consumed + 1)
                    self.lost(f"subscribe for {address} rejected: {item.message}",
                              terminal=True)
                    return
                # Not an answer to a pending subscribe: noted, never fatal.
                malformed.append(ValueError(f"unsolicited JSON-RPC error {item.code}: "
                                            f"{item.message[:80]}"))
            else:
                consumed += 1  # unsubscribe acks, unknown methods: nothing to deliver
        self._flush(out, malformed, consumed)

    def on_command(self, message: Any) -> None:
        if isinstance(message, Barrier):
            self._barriers[message.token] = _Outstanding(self.keepalives_sent)
            self.conn.ping(message.token)
        else:
            super().on_command(message)

    def _keepalive_answered(self, number: int) -> None:
        """Keepalive ping ``number`` came back: barriers written before it are lost."""
        for token, barrier in list(self._barriers.items()):
            if barrier.keepalives_before >= number:
                continue  # written after that ping: its pong may still come
            if barrier.resends >= BARRIER_RESENDS:
                self.lost(f"barrier pong lost {barrier.resends + 1} times "
                          "(later keepalive pongs came back)")
                return
            barrier.resends += 1
            barrier.keepalives_before = self.keepalives_sent
            self.log.info("barrier pong lost (a later keepalive pong came back); "
                          "barrier written again (%d)", barrier.resends)
            self.conn.ping(token)

    def _acked(self, ack: SubscribeAck) -> None:
        address = self._by_request.get(ack.id)
        if address is None:
            return
        self._by_subscription[ack.subscription] = address
        if len(self._by_subscription) < len(self._addresses):
            self.expect_handshake_answer()
        elif not self._replay_from:
            self.mark_up()
        else:
            self._resume_token = f"resume-{self.generation}".encode()
            self.conn.ping(self._resume_token)
            self.expect_handshake_answer()

    def _release_held(self, out: list[tuple[str, StreamEvent]]) -> None:
        held = self._held + out
        self._held = []
        held.sort(key=_execution_order)  # stable: arrival order where positions tie
        if held:
            self.report(StreamItems(self.name, self.generation, held))
        if self._lent:
            # The forwarded items now count against the window like any others;
            # their credits come back as the application takes them.
            self.conn.grant(-self._lent)
            self._lent = 0

    def _flush(self, out: list[tuple[str, StreamEvent]],
               malformed: list[Exception], consumed: int) -> None:
        if self._resuming:
            self._held.extend(out)
            if out:
                self.conn.grant(len(out))  # lent until the resume pong: read on
                self._lent += len(out)
        elif out:
            self.report(StreamItems(self.name, self.generation, out))
        if malformed:
            self.malformed(malformed)
        if consumed:
            self.conn.grant(consumed)
