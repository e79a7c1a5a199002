"""Hypothesis: arbitrary and mutated frames only ever raise ProtocolError.

(That the fast and the careful decoding paths agree on mutated frames is
tests/protocol/test_fastpath.py's.)"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    ProtocolError,
    decode_pubsub,
    decode_response,
    encode_pubsub,
    encode_request,
    encode_response,
)
from protocol.codec import decode_pubsub_request, decode_request
from tests.protocol.test_codec import PUBSUB, REQUESTS, RESPONSES
from tests.protocol.test_fastpath import _mutate, any_json

DECODERS = [decode_response, decode_pubsub, decode_request, decode_pubsub_request]

SEEDS = ([encode_response(m, 3) for m in RESPONSES] + [encode_pubsub(m) for m in PUBSUB]
         + [encode_request(m) for m in REQUESTS])

KEYS = ["method", "params", "seqId", "session_id", "rpc_endpoint", "status", "summary",
        "result", "subscription", "slot", "signature", "context", "id", "error", "jsonrpc"]


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
@given(st.dictionaries(st.sampled_from(KEYS), any_json, max_size=5))
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
