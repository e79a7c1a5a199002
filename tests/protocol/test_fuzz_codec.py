"""Hypothesis: arbitrary and mutated frames only ever raise ProtocolError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import (
    ProtocolError,
    decode_pubsub,
    decode_response,
    encode_pubsub,
    encode_request,
    encode_response,
)
from protocol.codec import _decode_pubsub, _load, decode_pubsub_request, decode_request
from protocol.pubsub import AccountDiffNotification, TransactionNotification
from tests.protocol.test_codec import PUBSUB, REQUESTS, RESPONSES
from tests.protocol.test_fastpath import _payloads, _wide

DECODERS = [decode_response, decode_pubsub, decode_request, decode_pubsub_request]

SEEDS = ([encode_response(m, 3) for m in RESPONSES] + [encode_pubsub(m) for m in PUBSUB]
         + [encode_request(m) for m in REQUESTS])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)
KEYS = ["method", "params", "seqId", "session_id", "rpc_endpoint", "status", "summary",
        "result", "subscription", "slot", "signature", "context", "id", "error", "jsonrpc"]


def _mutate(obj: Any, data: st.DataObject) -> Any:
    """Replace, drop or retype one node of a valid frame."""
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        action = data.draw(st.sampled_from(["drop", "replace", "recurse"]))
        out = dict(obj)
        if action == "drop":
            del out[key]
        elif action == "replace":
            out[key] = data.draw(json_values)
        else:
            out[key] = _mutate(obj[key], data)
        return out
    if isinstance(obj, list) and obj:
        index = data.draw(st.integers(0, len(obj) - 1))
        out_list = list(obj)
        out_list[index] = _mutate(obj[index], data)
        return out_list
    return data.draw(json_values)


def _check(frame: str | bytes) -> None:
    for decode in DECODERS:
        try:
            decode(frame)  # type: ignore[operator]
        except ProtocolError as exc:
            text = str(exc)
            assert "not JSON" in text or "not UTF-8" in text or text.startswith("$")
            assert exc.path.startswith("$")


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_valid_frames(data: st.DataObject) -> None:
    base = json.loads(data.draw(st.sampled_from(SEEDS)))
    _check(json.dumps(_mutate(base, data)))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5))
def test_arbitrary_objects(obj: dict[str, Any]) -> None:
    _check(json.dumps(obj))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_and_text(frame: str | bytes) -> None:
    _check(frame)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(SEEDS), st.integers(0, 400))
def test_truncated_frames(frame: str, cut: int) -> None:
    _check(frame[:cut])
    _check(frame.encode()[:cut])


def _careful(frame: str | bytes) -> Any:
    """decode_pubsub without its fast path: the result or the error, for comparison."""
    try:
        return _decode_pubsub(_load(frame), frame)
    except ProtocolError as exc:
        return ("error", str(exc))


def _decoded(frame: str | bytes) -> Any:
    try:
        return decode_pubsub(frame)
    except ProtocolError as exc:
        return ("error", str(exc))


NOTIFICATION_SEEDS = [encode_pubsub(m) for m in [
    *(m for m in PUBSUB if isinstance(m, TransactionNotification | AccountDiffNotification)),
    TransactionNotification(7, 100, "sig1", {"message": "m"}, {"err": None}, index=3),
    AccountDiffNotification(8, 101, "Acc1", "sig2", {"lamports": 4}, None, write_index=0)]]


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fast_notification_path_agrees_with_the_careful_path(data: st.DataObject) -> None:
    """The fast path accepts only what the field-by-field path accepts, builds the
    same message, and leaves every error (and its message) to that path."""
    base = json.loads(data.draw(st.sampled_from(NOTIFICATION_SEEDS)))
    obj = _mutate(base, data)
    # An integer beyond 64 bits inside an untyped payload is the one difference between
    # the paths, which no server writes (protocol/fastpath.py says why).
    assume(not any(_wide(p) for p in _payloads(obj)[:-1]))
    frame = json.dumps(obj).encode()
    assert _decoded(frame) == _careful(frame)
