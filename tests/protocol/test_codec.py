"""Golden frames and round trips for every wire message."""

from __future__ import annotations

import json

import pytest

from protocol import (
    AccountData,
    AccountDiffNotification,
    Attach,
    BacktestError,
    Close,
    Completed,
    ContinueParams,
    CreateSession,
    Error,
    JsonRpcError,
    ProtocolError,
    ReadyForContinue,
    Resume,
    SessionAttached,
    SessionCreated,
    SlotNotification,
    Status,
    Subscribe,
    SubscribeAck,
    Success,
    TransactionNotification,
    UnknownPubsub,
    UnknownResponse,
    Unsubscribe,
    UnsubscribeAck,
    decode_pubsub,
    decode_pubsub_request,
    decode_request,
    decode_response,
    encode_pubsub,
    encode_request,
    encode_response,
    encode_subscribe,
)

SID = "backtest_0192a3b4-c5d6-7e8f-9012-3456789abcde"

REQUESTS = [
    CreateSession(399834992, 399834997,
                  signer_filter=("Vote111111111111111111111111111111111111111",), send_summary=True,
                  disconnect_timeout_secs=900, capacity_wait_timeout_secs=900,
                  extra_compute_units=5000),
    CreateSession(1, 1),
    ContinueParams(),
    ContinueParams(advance_count=3, transactions=("AQAAAA==",), modify_account_states={
        "So11111111111111111111111111111111111111112": AccountData(
            b"\x00\x00\x00", False, 33594, "11111111111111111111111111111111", 80)}),
    Attach(SID, 42),
    Attach(SID),
    Resume(),
    Close(),
]

RESPONSES = [
    SessionCreated(SID, f"/backtest/{SID}"),
    SessionCreated(SID, f"/backtest/{SID}", "task-1"),
    SessionAttached(SID, "http://h/backtest/x", None),
    ReadyForContinue(),
    SlotNotification(400000042),
    Status("decodedTransactions"),
    Status("someFutureStage"),
    Completed(None),
    Completed({"correct_simulation": 3, "incorrect_simulation": 0}),
    Success(),
    Error(BacktestError("noMoreBlocks")),
    Error(BacktestError("invalidRequest", {"error": "continue while not ready"})),
    Error(BacktestError("bundleNotFound", {"start_slot": 1, "end_slot": 2})),
    UnknownResponse("someFutureEventV9", {"slot": 5}),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_request_round_trip(msg: object) -> None:
    assert decode_request(encode_request(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", RESPONSES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("seq", [None, 0, 123])
def test_response_round_trip(msg: object, seq: int | None) -> None:
    frame = encode_response(msg, seq)  # type: ignore[arg-type]
    assert decode_response(frame) == (seq, msg)
    assert decode_response(frame.encode()) == (seq, msg)  # binary frames decode too


PUBSUB = [
    SubscribeAck(1, 7),
    UnsubscribeAck(2, True),
    JsonRpcError(3, -32602, "bad params"),
    JsonRpcError(None, -32700, "parse error"),
    TransactionNotification(7, 100, "sig1", {"message": "m"}, {"err": None}),
    AccountDiffNotification(8, 101, "Acc1", "sig2", None, {"lamports": 5}),
    UnknownPubsub("slotNotification", {"result": 5}),
]


@pytest.mark.parametrize("msg", PUBSUB, ids=lambda m: type(m).__name__)
def test_pubsub_round_trip(msg: object) -> None:
    assert decode_pubsub(encode_pubsub(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", [
    Subscribe(1, "transactions", "Addr1"),
    Subscribe(2, "transactions", "Addr1", 400),
    Subscribe(3, "account_diffs", "Addr2", 0),
    Unsubscribe(4, "transactions", 7),
    Unsubscribe(5, "account_diffs", 8),
], ids=lambda m: type(m).__name__)
def test_pubsub_request_round_trip(msg: object) -> None:
    assert decode_pubsub_request(encode_subscribe(msg)) == msg  # type: ignore[arg-type]


# --- golden frames, written from the reference docs ---------------------------------

def test_golden_status_with_seq_id() -> None:
    frame = '{"seqId":123,"method":"status","params":{"status":"decodedTransactions"}}'
    assert decode_response(frame) == (123, Status("decodedTransactions"))
    assert encode_response(Status("decodedTransactions"), 123) == frame


def test_golden_session_created_both_casings() -> None:
    snake = ('{"method":"sessionCreated","params":{"session_id":"backtest_1",'
             '"rpc_endpoint":"/backtest/backtest_1"}}')
    camel = ('{"method":"sessionCreated","params":{"sessionId":"backtest_1",'
             '"rpcEndpoint":"/backtest/backtest_1"}}')
    expected = (None, SessionCreated("backtest_1", "/backtest/backtest_1"))
    assert decode_response(snake) == expected
    assert decode_response(camel) == expected
    assert encode_response(expected[1]) == snake  # the writer is snake_case


def test_golden_slot_notification_bare_integer() -> None:
    frame = '{"method":"slotNotification","params":400000042}'
    assert decode_response(frame) == (None, SlotNotification(400000042))
    assert encode_response(SlotNotification(400000042)) == frame


def test_golden_unit_variants_have_no_params() -> None:
    assert encode_request(Close()) == '{"method":"closeBacktestSession"}'
    assert encode_request(Resume()) == '{"method":"resumeAttachedSession"}'
    assert encode_response(ReadyForContinue()) == '{"method":"readyForContinue"}'
    assert encode_response(Success()) == '{"method":"success"}'
    assert decode_response('{"method":"readyForContinue","params":null}') == (
        None, ReadyForContinue())


def test_golden_continue_camel_case() -> None:
    msg = ContinueParams(advance_count=1, transactions=("AQAAAA==",), modify_account_states={
        "So11111111111111111111111111111111111111112": AccountData(
            b"\x00\x00\x00", False, 33594, "11111111111111111111111111111111", 80)})
    assert json.loads(encode_request(msg)) == {
        "method": "continue",
        "params": {
            "advanceCount": 1,
            "transactions": ["AQAAAA=="],
            "modifyAccountStates": {"So11111111111111111111111111111111111111112": {
                "data": {"data": "AAAA", "encoding": "base64"}, "executable": False,
                "lamports": 33594, "owner": "11111111111111111111111111111111",
                "space": 80}},
        },
    }


def test_golden_create_session_camel_case_omits_unset() -> None:
    frame = encode_request(CreateSession(399834992, 399834997))
    assert json.loads(frame) == {"method": "createBacktestSession", "params": {
        "startSlot": 399834992, "endSlot": 399834997, "signerFilter": [],
        "sendSummary": True, "disconnectTimeoutSecs": 900}}


def test_golden_attach_snake_case() -> None:
    assert encode_request(Attach("backtest_0192", 42)) == (
        '{"method":"attachBacktestSession","params":'
        '{"session_id":"backtest_0192","last_sequence":42}}')
    # The docs' camelCase spelling is read too.
    assert decode_request('{"method":"attachBacktestSession","params":'
                          '{"sessionId":"b","lastSequence":4}}') == Attach("b", 4)


def test_golden_errors_external_tagging() -> None:
    _, msg = decode_response('{"method":"error","params":{"invalidRequest":{"error":"x"}}}')
    assert msg == Error(BacktestError("invalidRequest", {"error": "x"}))
    assert msg.error.terminal
    _, msg = decode_response('{"method":"error","params":"NoMoreBlocks"}')  # PascalCase too
    assert msg == Error(BacktestError("noMoreBlocks"))
    assert msg.error.terminal
    _, msg = decode_response('{"method":"error","params":{"SessionOwnershipBusy":'
                             '{"reason":"held"}}}')
    assert msg == Error(BacktestError("sessionOwnershipBusy", {"reason": "held"}))
    assert not msg.error.terminal and msg.error.retryable_in_handshake


@pytest.mark.parametrize("kind,terminal", [
    ("sessionNotFound", True), ("sessionOwnerMismatch", True), ("bundleNotFound", True),
    ("noProducedBlocksInRange", True), ("invalidTransactionEncoding", True),
    ("noMoreBlocks", True), ("advanceSlotFailed", True), ("finalizeSlotFailed", True),
    ("internal", False), ("clerkError", False), ("sessionOwnershipBusy", False),
    ("simulationError", False),
])
def test_error_classification(kind: str, terminal: bool) -> None:
    assert BacktestError(kind).terminal is terminal


def test_golden_pubsub_frames() -> None:
    assert json.loads(encode_subscribe(Subscribe(1, "transactions", "A", 5))) == {
        "jsonrpc": "2.0", "id": 1, "method": "transactionSubscribe",
        "params": [{"mentions": ["A"]}, {"replayFromSlot": 5}]}
    assert json.loads(encode_subscribe(Subscribe(2, "account_diffs", "B"))) == {
        "jsonrpc": "2.0", "id": 2, "method": "accountDiffSubscribe", "params": ["B", {}]}
    assert decode_pubsub('{"jsonrpc":"2.0","result":7,"id":1}') == SubscribeAck(1, 7)
    frame = ('{"jsonrpc":"2.0","method":"accountDiffNotification","params":{"result":'
             '{"context":{"slot":9},"account":"B","signature":"s","pre":null,'
             '"post":{"lamports":1}},"subscription":3}}')
    assert decode_pubsub(frame) == AccountDiffNotification(3, 9, "B", "s", None,
                                                           {"lamports": 1})


@pytest.mark.parametrize("frame,path", [
    ('{"seqId":"1","method":"success"}', "$.seqId"),
    ('{"method":"slotNotification","params":"5"}', "$.params"),
    ('{"method":"status","params":{"status":5}}', "$.params.status"),
    ('{"method":"sessionCreated","params":{"session_id":"a"}}', "$.params.rpc_endpoint"),
    ('{"params":1}', "$.method"),
    ('[1,2]', "$"),
    ('{"method":"completed","params":{"summary":[1]}}', "$.params.summary"),
])
def test_bad_control_frames_name_the_field(frame: str, path: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(frame)
    assert info.value.path == path
    assert path in str(info.value) and frame[:20] in str(info.value)


@pytest.mark.parametrize("frame,path", [
    ('{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":'
     '{"slot":"1","signature":"s"},"subscription":1}}', "$.params.result.slot"),
    ('{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":'
     '{"slot":1},"subscription":1}}', "$.params.result.signature"),
    ('{"jsonrpc":"2.0","result":"x","id":1}', "$.result"),
    ('{"jsonrpc":"2.0","result":1}', "$.id"),
])
def test_bad_pubsub_frames_name_the_field(frame: str, path: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_pubsub(frame)
    assert info.value.path == path


@pytest.mark.parametrize("make,field", [
    (lambda: CreateSession(5, 4), "end_slot"),
    (lambda: CreateSession(-1, 4), "start_slot"),
    (lambda: CreateSession(1, 4, disconnect_timeout_secs=901), "disconnect_timeout_secs"),
    (lambda: CreateSession(1, 4, signer_filter="abc"), "signer_filter"),
    (lambda: ContinueParams(advance_count=0), "advance_count"),
    (lambda: ContinueParams(advance_count=True), "advance_count"),
    (lambda: ContinueParams(transactions=("not base64!",)), "transactions[0]"),
    (lambda: ContinueParams(modify_account_states={"A": 1}), "modify_account_states[A]"),
])
def test_bad_user_arguments_are_rejected_with_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=r"^" + field.replace("[", r"\[").replace("]", r"\]")):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("frame,decoded", [
    ('{"method":"sessionAttached","params":{"session_id":"backtest_1",'
     '"rpc_endpoint":"/backtest/backtest_1","task_id":"t-9"}}',
     SessionAttached("backtest_1", "/backtest/backtest_1", "t-9")),
    ('{"seqId":7,"method":"completed","params":{"summary":{"correct_simulation":3,'
     '"incorrect_simulation":0,"execution_errors":0,"balance_diff":0,"log_diff":0}}}',
     Completed({"correct_simulation": 3, "incorrect_simulation": 0, "execution_errors": 0,
                "balance_diff": 0, "log_diff": 0})),
    ('{"seqId":8,"method":"completed","params":{"summary":null}}', Completed(None)),
    ('{"method":"success"}', Success()),
    ('{"method":"readyForContinue"}', ReadyForContinue()),
])
def test_golden_remaining_responses(frame: str, decoded: object) -> None:
    seq, msg = decode_response(frame)
    assert msg == decoded
    assert encode_response(msg, seq) == frame


@pytest.mark.parametrize("frame,decoded", [
    ('{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":{"slot":400000042,'
     '"signature":"5h1","transaction":{"message":{}},"meta":{"err":null}},"subscription":7}}',
     TransactionNotification(7, 400000042, "5h1", {"message": {}}, {"err": None})),
    ('{"jsonrpc":"2.0","result":true,"id":2}', UnsubscribeAck(2, True)),
    ('{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad params"}}',
     JsonRpcError(3, -32602, "bad params")),
])
def test_golden_remaining_pubsub(frame: str, decoded: object) -> None:
    assert decode_pubsub(frame) == decoded
    assert encode_pubsub(decoded) == frame  # type: ignore[arg-type]


def test_golden_unsubscribe_and_resume() -> None:
    assert encode_subscribe(Unsubscribe(2, "transactions", 7)) == (
        '{"jsonrpc":"2.0","id":2,"method":"transactionUnsubscribe","params":[7]}')
    assert encode_subscribe(Unsubscribe(3, "account_diffs", 8)) == (
        '{"jsonrpc":"2.0","id":3,"method":"accountDiffUnsubscribe","params":[8]}')
    assert decode_request('{"method":"resumeAttachedSession"}') == Resume()
