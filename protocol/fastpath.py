"""The converter's fast loads hooks: the hot wire classes decoded and checked in C (msgspec).

A PubSub notification is nearly every frame a client reads. Parsing it with
orjson and then checking each field in Python cost about twice the parse
alone; a ``msgspec.json.Decoder`` typed with the frame's shape parses, checks
the types and builds typed objects in one pass in C, and skips building the
dicts of the envelope (``params``, ``result``) and the strings the client never
reads (``jsonrpc``). The checks here are exactly those of the field-by-field
path in :mod:`protocol.codec` (the slow path), expressed as types:

* ``int`` fields are bounded to int64 (see :data:`Int`): beyond it the slow path
  decides, as orjson reads an integer beyond ``2**64-1`` as a float, which it
  refuses ("expected int, got float");
* positions (``index``, ``writeIndex``) and slots of control frames are
  ``>= 0``; strings are ``str``; every other field of a notification is any JSON;
* the message is chosen by ``method`` (a tagged union); an unknown method, an
  ack, a missing or ill-typed field fails the decoder, and the caller then
  decodes the frame again on the slow path, which alone says what is valid
  and names the field at fault. So an error costs two decodes, a valid
  notification one.

The wire classes are attrs classes, and msgspec builds attrs classes in C
(``Status`` below is one), but only when the JSON object has the class's own
shape and field names: a notification's fields are spread over two nested
objects (``params.subscription``, ``params.result.slot``, and
``result.context.slot`` / ``writeIndex`` for account diffs). msgspec therefore
decodes the frame into private ``Struct`` envelopes, and the notification is
filled from them without its ``__init__`` (see ``twin``). The wire classes
have no attrs validators (``twin`` refuses a class that gains one), so no
check of theirs is skipped: msgspec would run attrs validators after building
an object, in Python, and only on the classes it builds itself.

One difference from the slow path cannot be closed in a type: an integer
beyond 64 bits *inside* an untyped payload (``transaction``, ``meta``, ``pre``,
``post``) stays an ``int`` here and is a ``float`` on the slow path (orjson). A
server's own integers are u64/i64 (serde_json reads a larger one as f64 too),
so a real frame never carries one; the tests exclude such payloads from the
comparison of the two paths, and say why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import attrs
import msgspec

from .messages import ReadyForContinue, Response, SlotNotification, Status, Success
from .pubsub import AccountDiffNotification, PubsubMessage, TransactionNotification

# msgspec bounds an int within int64 only, and reads any larger integer as an
# int. So the bounds are int64's: a value beyond them (a u64 above 2**63-1, or
# one beyond 64 bits, which orjson reads as a float) fails here, and the slow
# path decides (it takes the first, refuses the second: "expected int, got float").
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
Int = Annotated[int, msgspec.Meta(ge=I64_MIN, le=I64_MAX)]
Position = Annotated[int, msgspec.Meta(ge=0, le=I64_MAX)]

_FAILED = (msgspec.DecodeError, UnicodeError, TypeError)
"""What a fast decode raises for a frame it does not take: a frame that is not
JSON or not of the expected shape (``DecodeError`` and its ``ValidationError``),
text with a lone surrogate (msgspec encodes ``str`` input to UTF-8 first), an
input that is neither ``str`` nor bytes-like. Each goes to the slow path."""


# --- PubSub notifications --------------------------------------------------------------

class _TxResult(msgspec.Struct, gc=False):
    slot: Int
    signature: str
    transaction: Any = None
    meta: Any = None
    index: Position | None = None


class _TxParams(msgspec.Struct, gc=False):
    result: _TxResult
    subscription: Int


class _TxFrame(msgspec.Struct, tag_field="method", tag="transactionNotification", gc=False):
    params: _TxParams


class _Context(msgspec.Struct, gc=False):
    slot: Int


class _DiffResult(msgspec.Struct, gc=False, rename={"write_index": "writeIndex"}):
    context: _Context
    account: str
    signature: str
    pre: Any = None
    post: Any = None
    write_index: Position | None = None


class _DiffParams(msgspec.Struct, gc=False):
    result: _DiffResult
    subscription: Int


class _DiffFrame(msgspec.Struct, tag_field="method", tag="accountDiffNotification", gc=False):
    params: _DiffParams


def twin(cls: type) -> type:
    """A subclass of the frozen wire class ``cls`` whose instances can be filled by
    plain attribute stores, then become ``cls`` itself (``obj.__class__ = cls``).

    Why: ``cls.__init__`` (a Python frame, a call per field through
    ``object.__setattr__``) or the slot descriptors' setters cost more than
    msgspec's whole decode. A twin is made by calling it, ``twin_cls()``: with
    ``object.__init__`` as its ``__init__`` that is CPython's own allocation, about
    half the cost of ``object.__new__(twin_cls)`` (a Python-level call that checks
    its argument). A subclass with no slots of its own has the same
    memory layout, so CPython allows the class to be swapped back; with the
    generic ``__setattr__``/``__delattr__`` the stores compile to direct slot
    writes. The object returned is an ordinary, frozen ``cls``: equal, hashed
    and printed as one built by its constructor. Only sound if ``__init__`` does
    nothing but store the fields, so a class that gains a validator, a
    converter or an ``__attrs_post_init__`` is refused here, at import.
    """
    fields = attrs.fields(cls)
    if ("__slots__" not in vars(cls) or hasattr(cls, "__attrs_post_init__")
            or any(f.validator is not None or f.converter is not None for f in fields)):
        raise TypeError(f"{cls.__name__}: not a plain slotted attrs class")
    return type(f"_{cls.__name__}Twin", (cls,), {
        "__slots__": (), "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__, "__init__": object.__init__})


assert [f.name for f in attrs.fields(TransactionNotification)] == [
    "subscription", "slot", "signature", "transaction", "meta", "index"]
assert [f.name for f in attrs.fields(AccountDiffNotification)] == [
    "subscription", "slot", "account", "signature", "pre", "post", "write_index"]


NOTIFICATION_ENVELOPES = msgspec.json.Decoder(_TxFrame | _DiffFrame)
"""msgspec's pass over a notification frame into the private envelopes, alone:
what a typed decode costs before the notification object is built (the bench
reports it as the floor of ``decode_pubsub``)."""


def pubsub_loads(slow: Callable[[str | bytes], PubsubMessage]
                 ) -> Callable[[str | bytes], PubsubMessage]:
    """The loads hook of :data:`~protocol.pubsub.PubsubMessage`: fast, else ``slow(frame)``.

    What it uses is bound in the closure (read like locals, not looked up as
    globals): it runs once per frame.
    """
    decode = NOTIFICATION_ENVELOPES.decode
    failed, tx_frame = _FAILED, _TxFrame
    tx_twin, tx_cls = twin(TransactionNotification), TransactionNotification
    diff_twin, diff_cls = twin(AccountDiffNotification), AccountDiffNotification

    def decode_pubsub(frame: str | bytes) -> PubsubMessage:
        """Client side: one PubSub frame.

        A notification (nearly every frame) is parsed, checked and built in C;
        anything else (an ack, an error, an unknown method, a bad frame) takes
        the field-by-field path, which names the field at fault
        (tests/protocol/test_fuzz_codec.py compares the two paths).
        """
        try:
            msg: Any = decode(frame)
        except failed:
            return slow(frame)
        params = msg.params
        result = params.result
        if type(msg) is tx_frame:
            out: Any = tx_twin()
            out.subscription = params.subscription
            out.slot = result.slot
            out.signature = result.signature
            out.transaction = result.transaction
            out.meta = result.meta
            out.index = result.index
            out.__class__ = tx_cls
            return out  # type: ignore[no-any-return]
        out = diff_twin()
        out.subscription = params.subscription
        out.slot = result.context.slot
        out.account = result.account
        out.signature = result.signature
        out.pre = result.pre
        out.post = result.post
        out.write_index = result.write_index
        out.__class__ = diff_cls
        return out  # type: ignore[no-any-return]

    return decode_pubsub


# --- control responses -----------------------------------------------------------------
# The responses of every slot and every continue. The rest (sessionCreated and
# sessionAttached, which accept either casing of their fields; completed; error;
# unknown methods) are once per session or rare, and take the slow path.

SeqId = Position | None


class _Control(msgspec.Struct, gc=False, tag_field="method", kw_only=True,
               rename={"seq": "seqId", "snake_seq": "seq_id"}):
    seq: SeqId = None
    # The tolerant reader also takes ``seq_id``; when a frame names it, the slow
    # path decides (it prefers ``seqId`` when both are present).
    snake_seq: Any = msgspec.UNSET


class _Ready(_Control, tag="readyForContinue"):
    params: Any = None


class _Success(_Control, tag="success"):
    params: Any = None


class _Slot(_Control, tag="slotNotification"):
    params: Position  # a bare slot; {"slot": n} is tolerated by the slow path


class _Status(_Control, tag="status"):
    params: Status  # an attrs class: msgspec builds it in C


def response_loads(slow: Callable[[str | bytes], tuple[int | None, Response]]
                   ) -> Callable[[str | bytes], tuple[int | None, Response]]:
    """The loads hook of control responses: fast, else ``slow(frame)``."""
    decode = msgspec.json.Decoder(_Ready | _Success | _Slot | _Status).decode
    failed, unset = _FAILED, msgspec.UNSET

    def decode_response(frame: str | bytes) -> tuple[int | None, Response]:
        """Client side: ``(seq_id or None, message)`` for one control frame."""
        try:
            msg: Any = decode(frame)
        except failed:
            return slow(frame)
        if msg.snake_seq is not unset:
            return slow(frame)
        kind = type(msg)
        out: Response
        if kind is _Slot:
            out = SlotNotification(msg.params)
        elif kind is _Status:
            out = msg.params
        elif kind is _Ready:
            out = ReadyForContinue()
        else:
            out = Success()
        return msg.seq, out

    return decode_response
