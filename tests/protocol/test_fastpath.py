"""The converter's fast loads hooks (msgspec, in C) against the slow, field-by-field path.

On valid frames both build the same message (the fast path building it alone);
on invalid ones both refuse, with the slow path's error naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import ProtocolError, decode_pubsub, decode_response
from protocol.codec import (
    SequencedResponse,
    _decode_response,
    _slow_pubsub,
    converter,
)
from protocol.fastpath import _Control, _DiffFrame, _Ready, _Slot, _Status, _Success, _TxFrame
from protocol.pubsub import AccountDiffNotification, PubsubMessage, TransactionNotification

I64_MIN, U64_MAX = -(2**63), 2**64 - 1
FAST_PUBSUB = msgspec.json.Decoder(_TxFrame | _DiffFrame)
FAST_CONTROL = msgspec.json.Decoder(_Ready | _Success | _Slot | _Status)

# JSON values as the server writes them: its integers are 64-bit (see _wide below).
wire_ints = st.integers(I64_MIN, U64_MAX)
payloads = st.recursive(
    st.none() | st.booleans() | wire_ints | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
MISSING = object()


def _obj(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not MISSING}


@st.composite
def shuffled(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    """The same object with its keys in another order (a server may write any)."""
    keys = draw(st.permutations(list(obj)))
    return {k: obj[k] for k in keys}


@st.composite
def tx_frames(draw: st.DrawFn) -> dict[str, Any]:
    result = _obj(slot=draw(wire_ints), signature=draw(st.text()),
                  transaction=draw(st.just(MISSING) | payloads),
                  meta=draw(st.just(MISSING) | payloads),
                  index=draw(st.just(MISSING) | st.none() | st.integers(0, U64_MAX)),
                  extra=draw(st.just(MISSING) | payloads))
    params = {"result": draw(shuffled(result)), "subscription": draw(wire_ints)}
    return draw(shuffled({"jsonrpc": "2.0", "method": "transactionNotification",
                          "params": draw(shuffled(params))}))


@st.composite
def diff_frames(draw: st.DrawFn) -> dict[str, Any]:
    result = _obj(context={"slot": draw(wire_ints)}, account=draw(st.text()),
                  signature=draw(st.text()), pre=draw(st.just(MISSING) | payloads),
                  post=draw(st.just(MISSING) | payloads),
                  writeIndex=draw(st.just(MISSING) | st.none() | st.integers(0, U64_MAX)))
    params = {"result": draw(shuffled(result)), "subscription": draw(wire_ints)}
    return draw(shuffled({"jsonrpc": "2.0", "method": "accountDiffNotification",
                          "params": draw(shuffled(params))}))


@st.composite
def control_frames(draw: st.DrawFn) -> dict[str, Any]:
    method, params = draw(st.sampled_from([
        ("readyForContinue", st.just(MISSING) | payloads),
        ("success", st.just(MISSING) | payloads),
        ("slotNotification", st.integers(0, U64_MAX)),
        ("status", st.builds(lambda s: {"status": s}, st.text())),
    ]))
    seq = draw(st.just(MISSING) | st.none() | st.integers(0, U64_MAX))
    snake = draw(st.just(MISSING) | st.none() | st.integers(0, 10))
    return draw(shuffled(_obj(method=method, params=draw(params), seqId=seq, seq_id=snake)))


def _outcome(decode: Any, frame: bytes) -> Any:
    try:
        out = decode(frame)
    except ProtocolError as exc:
        return ("error", str(exc), exc.path)
    return (type(out), out)


def _fast_takes(decoder: msgspec.json.Decoder[Any], frame: bytes) -> bool:
    try:
        msg = decoder.decode(frame)
    except msgspec.DecodeError:
        return False
    return not isinstance(msg, _Control) or msg.snake_seq is msgspec.UNSET


def _in_i64(frame: dict[str, Any]) -> bool:
    """Whether every typed integer of a notification fits in int64 (msgspec's bounds;
    a larger one, a valid u64, is left to the slow path)."""
    params = frame["params"]
    result = params["result"]
    slot = result["context"]["slot"] if "context" in result else result["slot"]
    return all(v is None or v <= 2**63 - 1 for v in (
        slot, params["subscription"], result.get("index"), result.get("writeIndex")))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(tx_frames() | diff_frames())
def test_valid_notifications_agree_and_take_the_fast_path(obj: dict[str, Any]) -> None:
    frame = json.dumps(obj).encode()
    fast, slow = _outcome(decode_pubsub, frame), _outcome(_slow_pubsub, frame)
    assert fast == slow
    assert fast[0] in (TransactionNotification, AccountDiffNotification)
    assert _fast_takes(FAST_PUBSUB, frame) == _in_i64(obj)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(control_frames())
def test_valid_control_responses_agree_and_take_the_fast_path(obj: dict[str, Any]) -> None:
    frame = json.dumps(obj).encode()
    assert _outcome(decode_response, frame) == _outcome(_decode_response, frame)
    typed = ("seqId", "params") if obj["method"] == "slotNotification" else ("seqId",)
    in_i64 = all(not isinstance(obj.get(k), int) or obj[k] <= 2**63 - 1 for k in typed)
    assert _fast_takes(FAST_CONTROL, frame) == (in_i64 and "seq_id" not in obj)


def _mutate(obj: Any, data: st.DataObject) -> Any:
    """Replace, drop or retype one node of a valid frame (any JSON, any integer)."""
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        action = data.draw(st.sampled_from(["drop", "replace", "recurse"]))
        out = dict(obj)
        if action == "drop":
            del out[key]
        elif action == "replace":
            out[key] = data.draw(any_json)
        else:
            out[key] = _mutate(obj[key], data)
        return out
    if isinstance(obj, list) and obj:
        index = data.draw(st.integers(0, len(obj) - 1))
        out_list = list(obj)
        out_list[index] = _mutate(obj[index], data)
        return out_list
    return data.draw(any_json)


def _wide(value: Any) -> bool:
    """An integer beyond 64 bits anywhere in ``value``: orjson (the slow path) reads it
    as a float, msgspec keeps the int. Inside an untyped payload that is the one
    difference between the paths (protocol/fastpath.py); a server never writes one."""
    if isinstance(value, dict):
        return any(_wide(v) for v in value.values())
    if isinstance(value, list):
        return any(_wide(v) for v in value)
    return type(value) is int and not I64_MIN <= value <= U64_MAX


def _payloads(obj: Any) -> list[Any]:
    """The untyped parts of a (mutated) frame: notification payloads, control params
    the client keeps as they came (an unknown response's, readyForContinue's)."""
    params = obj.get("params") if isinstance(obj, dict) else None
    result = params.get("result") if isinstance(params, dict) else None
    parts = [result.get(k) for k in ("transaction", "meta", "pre", "post")
             ] if isinstance(result, dict) else []
    return [*parts, params]


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_frames_agree(data: st.DataObject) -> None:
    """Invalid or unusual frames: both paths refuse alike (the same error and field),
    or both build the same message."""
    kind = data.draw(st.sampled_from(["pubsub", "control"]))
    base = data.draw(tx_frames() | diff_frames() if kind == "pubsub" else control_frames())
    obj = _mutate(base, data)
    if kind == "pubsub":
        assume(not any(_wide(p) for p in _payloads(obj)[:-1]))
        frame = json.dumps(obj).encode()
        assert _outcome(decode_pubsub, frame) == _outcome(_slow_pubsub, frame)
    else:
        # A control response keeps only typed fields, except an unknown method's params.
        assume(not _wide(_payloads(obj)[-1]))
        frame = json.dumps(obj).encode()
        assert _outcome(decode_response, frame) == _outcome(_decode_response, frame)


@pytest.mark.parametrize("frame", [
    # Keys twice: orjson keeps the last; the fast path must not decide otherwise.
    b'{"method":"transactionNotification","params":{"result":{"slot":1,"signature":"s"},'
    b'"subscription":2},"method":"other"}',
    b'{"method":"transactionNotification","params":{"result":{"slot":1,"signature":"s"},'
    b'"subscription":2},"params":{"result":{"slot":3,"signature":"t"},"subscription":4}}',
    b'{"method":"accountDiffNotification","params":{"result":{"context":{"slot":1},'
    b'"account":"a","signature":"s","writeIndex":-1},"subscription":2}}',
    b'{"method":"transactionNotification","params":{"result":{"slot":18446744073709551615,'
    b'"signature":"s"},"subscription":18446744073709551616}}',
    b'{"method":"transactionNotification","params":{"result":{"slot":1,"signature":"\\ud800"},'
    b'"subscription":2}}',
    b'{"method":"transactionNotification","params":{"result":{"slot":1,"signature":"\xff"},'
    b'"subscription":2}}',
    '{"method":"transactionNotification","params":{"result":{"slot":1,"signature":"\ud800"},'
    '"subscription":2}}',  # text with a lone surrogate: msgspec cannot even encode it
    b'{"method":"transactionNotification","params":{"result":{"slot":true,"signature":"s"},'
    b'"subscription":2}}',
    b'{"jsonrpc":"2.0","result":7,"id":1}',
    b'{"jsonrpc":"2.0","method":"slotNotification","params":{"result":5}}',
    b'[1, 2]',
    b'',
])
def test_edge_frames_agree(frame: str | bytes) -> None:
    assert _outcome(decode_pubsub, frame) == _outcome(_slow_pubsub, frame)  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", [
    b'{"seqId":5,"seq_id":6,"method":"readyForContinue"}',
    b'{"seq_id":6,"method":"readyForContinue"}',
    b'{"seqId":5,"method":"readyForContinue","seqId":-1}',
    b'{"seqId":1.0,"method":"success"}',
    b'{"method":"slotNotification","params":{"slot":5}}',
    b'{"method":"slotNotification","params":-5}',
    b'{"method":"status","params":{"status":5}}',
    b'{"method":"status","params":"decoded"}',
    b'{"method":"status","params":{"status":"x"},"method":"readyForContinue"}',
])
def test_edge_control_frames_agree(frame: bytes) -> None:
    assert _outcome(decode_response, frame) == _outcome(_decode_response, frame)


def test_a_decoded_notification_is_the_plain_frozen_wire_class() -> None:
    """Built without ``__init__``: still exactly the class, equal, hashed and frozen alike."""
    made = TransactionNotification(1, 2, "s", None, None, 3)
    frame = ('{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":'
             '{"slot":2,"signature":"s","index":3},"subscription":1}}')
    decoded = decode_pubsub(frame)
    assert type(decoded) is TransactionNotification
    assert decoded == made and hash(decoded) == hash(made) and repr(decoded) == repr(made)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        decoded.slot = 5  # type: ignore[misc]
    assert converter.loads(frame, PubsubMessage) == made  # the converter's entry point


def test_the_converter_hands_control_frames_to_their_hook() -> None:
    assert converter.loads('{"seqId":4,"method":"status","params":{"status":"x"}}',
                           SequencedResponse) == decode_response(
        '{"seqId":4,"method":"status","params":{"status":"x"}}')
