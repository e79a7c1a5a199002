"""Golden frames for parallel sessions: ``CreateSession.parallel``, ``sessionsCreatedV2``,
``sessionEventV2``, ``attachParallelControlSessionV2``, ``parallelSessionAttachedV2``,
``continueSessionV1``/``continueToSessionV1`` and ``closeSessionV1`` (protocol/WIRE.md,
Parallel sessions)."""

from __future__ import annotations

import json

import pytest

from protocol import (
    AttachParallel,
    CloseSession,
    ContinueParams,
    ContinueSession,
    ContinueToParams,
    CreateSession,
    ParallelAttached,
    Paused,
    ProtocolError,
    ReadyForContinue,
    SessionEvent,
    SessionsCreated,
    SlotNotification,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def test_golden_parallel_create() -> None:
    frame = json.loads(encode_request(CreateSession(10, 20, parallel=True)))
    assert frame["params"]["parallel"] is True
    assert "parallel" not in json.loads(encode_request(CreateSession(10, 20)))["params"]


def test_golden_sessions_created_v2() -> None:
    frame = ('{"method":"sessionsCreatedV2","params":{"control_session_id":"parallel_1",'
             '"session_ids":["a","b"],"task_ids":[null,"t"],"start_slots":[10,16],'
             '"end_slots":[15,20]}}')
    msg = SessionsCreated("parallel_1", ("a", "b"), (None, "t"), (10, 16), (15, 20))
    assert decode_response(frame) == (None, msg)
    assert encode_response(msg) == frame


@pytest.mark.parametrize(("inner", "event"), [
    ('{"method":"slotNotification","params":12}', SlotNotification(12)),
    ('{"method":"readyForContinue"}', ReadyForContinue()),
    ('{"method":"paused","params":{"slot":12,"batch_index":1}}', Paused(12, 1)),
])
def test_golden_session_event_v2(inner: str, event: object) -> None:
    frame = ('{"method":"sessionEventV2","params":{"session_id":"a","seq_id":4,"event":'
             + inner + "}}")
    assert decode_response(frame) == (None, SessionEvent("a", 4, event))
    assert json.loads(encode_response(SessionEvent("a", 4, event))) == json.loads(frame)


def test_golden_parallel_attach_and_answer() -> None:
    assert encode_request(AttachParallel("parallel_1", {"a": 4, "b": 9})) == (
        '{"method":"attachParallelControlSessionV2","params":{"control_session_id":'
        '"parallel_1","last_sequences":{"a":4,"b":9}}}')
    frame = ('{"method":"parallelSessionAttachedV2","params":{"control_session_id":'
             '"parallel_1","session_ids":["a","b"],"task_ids":[null,null]}}')
    assert decode_response(frame) == (None, ParallelAttached("parallel_1", ("a", "b"),
                                                             (None, None)))


def test_golden_per_session_requests() -> None:
    assert json.loads(encode_request(ContinueSession("a", ContinueParams(3)))) == {
        "method": "continueSessionV1", "params": {"session_id": "a", "params": {
            "advanceCount": 3, "transactions": [], "modifyAccountStates": {}}}}
    to = ContinueSession("a", ContinueToParams(12, 1))
    assert encode_request(to) == ('{"method":"continueToSessionV1","params":{"session_id":"a",'
                                  '"params":{"slot":12,"batchIndex":1}}}')
    assert decode_request(encode_request(to)) == to
    assert encode_request(CloseSession("a")) == (
        '{"method":"closeSessionV1","params":{"session_id":"a"}}')


@pytest.mark.parametrize(("frame", "field"), [
    ('{"method":"sessionEventV2","params":{"seq_id":1,"event":{"method":"readyForContinue"}}}',
     "$.params.session_id"),
    ('{"method":"sessionEventV2","params":{"session_id":"a","seq_id":-1,"event":{}}}',
     "$.params.seq_id"),
    ('{"method":"sessionEventV2","params":{"session_id":"a","event":{"method":"paused",'
     '"params":{"slot":"x"}}}}', "$.params.event.params.slot"),
    ('{"method":"sessionsCreatedV2","params":{"control_session_id":"p"}}',
     "$.params.session_ids"),
])
def test_malformed_parallel_frames_name_the_field(frame: str, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(frame)
    assert info.value.path.startswith(field), info.value
