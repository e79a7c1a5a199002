"""Golden frames and argument checks for precise stepping: ``continueTo``, ``paused``,
``discoveryBatch`` and ``CreateSession.discoveries`` (protocol/WIRE.md, Stepping)."""

from __future__ import annotations

import json

import pytest

from protocol import (
    ContinueToParams,
    CreateSession,
    DiscoveryBatch,
    DiscoveryFilter,
    EncodedBinary,
    Paused,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

PROGRAM = "So11111111111111111111111111111111111111112"


def test_golden_create_with_discoveries() -> None:
    create = CreateSession(10, 20, discoveries=[DiscoveryFilter(PROGRAM)])
    assert json.loads(encode_request(create))["params"]["discoveries"] == [
        {"programExecuted": PROGRAM}]
    assert decode_request(encode_request(create)) == create
    # Empty: not written at all (a server that predates discoveries never sees it).
    assert "discoveries" not in json.loads(encode_request(CreateSession(10, 20)))["params"]


def test_golden_continue_to() -> None:
    assert encode_request(ContinueToParams(400000007, 2)) == (
        '{"method":"continueTo","params":{"slot":400000007,"batchIndex":2}}')
    with_tx = ContinueToParams(400000007, 0, ["AQAAAA=="])
    assert json.loads(encode_request(with_tx))["params"] == {
        "slot": 400000007, "batchIndex": 0, "transactions": ["AQAAAA=="]}
    assert decode_request(encode_request(with_tx)) == with_tx
    assert decode_request('{"method":"continueTo","params":{"slot":5,"batch_index":1}}') == (
        ContinueToParams(5, 1))


def test_golden_paused() -> None:
    frame = '{"seqId":9,"method":"paused","params":{"slot":400000007,"batch_index":2}}'
    assert decode_response(frame) == (9, Paused(400000007, 2))
    assert encode_response(Paused(400000007, 2), 9) == frame
    assert decode_response('{"method":"paused","params":{"slot":5,"batchIndex":1}}') == (
        None, Paused(5, 1))


def test_golden_discovery_batch() -> None:
    frame = ('{"seqId":4,"method":"discoveryBatch","params":{"slot":400000007,'
             '"batch_index":2,"matched":[{"programExecuted":"' + PROGRAM + '"}],'
             '"transactions":[{"data":"AAAA","encoding":"base64"}],'
             '"transaction_indices":[5]}}')
    expected = DiscoveryBatch(400000007, 2, (DiscoveryFilter(PROGRAM),),
                              (EncodedBinary("AAAA"),), (5,))
    assert decode_response(frame) == (4, expected)
    assert encode_response(expected, 4) == frame


def test_discovery_batch_keeps_an_unknown_filter_kind_raw() -> None:
    frame = ('{"method":"discoveryBatch","params":{"slot":7,"batch_index":0,'
             '"matched":[{"oracleUpdate":{"programs":[],"accounts":[]}}]}}')
    _, msg = decode_response(frame)
    assert isinstance(msg, DiscoveryBatch)
    assert msg.matched == ({"oracleUpdate": {"programs": [], "accounts": []}},)
    assert msg.transactions == () and msg.transaction_indices == ()


@pytest.mark.parametrize(("frame", "field"), [
    ('{"method":"paused","params":{"slot":"x"}}', "$.params.slot"),
    ('{"method":"discoveryBatch","params":{"slot":1}}', "$.params.batch_index"),
    ('{"method":"discoveryBatch","params":{"slot":1,"batch_index":0,"matched":{}}}',
     "$.params.matched"),
    ('{"method":"discoveryBatch","params":{"slot":1,"batch_index":0,'
     '"matched":[{"programExecuted":"not-a-key"}]}}', "$.params.matched[0]"),
])
def test_malformed_stepping_frames_name_the_field(frame: str, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(frame)
    assert info.value.path.startswith(field), info.value


@pytest.mark.parametrize(("make", "field"), [
    (lambda: ContinueToParams(-1, 0), "slot"),
    (lambda: ContinueToParams(5, 2**32), "batch_index"),
    (lambda: ContinueToParams(5, True), "batch_index"),
    (lambda: ContinueToParams(5, 0, ["not base64!"]), "transactions[0]"),
    (lambda: DiscoveryFilter("nope"), "program_executed"),
    (lambda: CreateSession(1, 2, discoveries=["x"]), "discoveries[0]"),
    (lambda: CreateSession(1, 2, discoveries=[DiscoveryFilter(PROGRAM)] * 2), "discoveries"),
])
def test_bad_stepping_arguments_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}"):
        make()  # type: ignore[operator]
