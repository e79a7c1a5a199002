"""Scheduled actions on the wire and in the simulator: ``CreateSession.actions``,
``actionSubscribe`` and ``actionNotification``; one result each, in order, replayed
after a drop of the action subscription (protocol/WIRE.md, Actions)."""

from __future__ import annotations

import json

import pytest
import websocket

from protocol import (
    ActionResultNotification,
    ActionSubscribe,
    ContinueParams,
    CreateSession,
    ProtocolError,
    ReadyForContinue,
    ScheduledAction,
    SubscribeAck,
    decode_pubsub,
    decode_pubsub_request,
    decode_request,
    encode_pubsub,
    encode_request,
    encode_subscribe,
    pubsub_url,
    resolve_rpc_url,
)
from protocol.messages import Completed
from protocol.simulator import LocalSimulator
from tests.support.wire import create, read_until

TX = "AQID"  # any base64: the simulator runs it and signs it where it ran

pytestmark = pytest.mark.backtest_simulator(seed=23, slots=300)


def test_golden_action_frames() -> None:
    create_frame = json.loads(encode_request(CreateSession(10, 20, actions=[
        ScheduledAction(12, [TX], "hedge")])))
    assert create_frame["params"]["actions"] == [
        {"slot": 12, "transactions": [TX], "label": "hedge"}]
    assert decode_request(json.dumps(create_frame)) == CreateSession(
        10, 20, actions=(ScheduledAction(12, (TX,), "hedge"),))
    assert "actions" not in json.loads(encode_request(CreateSession(10, 20)))["params"]
    assert encode_subscribe(ActionSubscribe(3, 12)) == (
        '{"jsonrpc":"2.0","id":3,"method":"actionSubscribe","params":[{"replayFromSlot":12}]}')
    assert decode_pubsub_request(encode_subscribe(ActionSubscribe(3))) == ActionSubscribe(3)
    note = ActionResultNotification(7, 12, 0, "hedge", ("sig",), "executed")
    frame = encode_pubsub(note)
    assert json.loads(frame) == {"jsonrpc": "2.0", "method": "actionNotification", "params": {
        "result": {"slot": 12, "actionIndex": 0, "label": "hedge", "signatures": ["sig"],
                   "status": "executed"}, "subscription": 7}}
    assert decode_pubsub(frame) == note


@pytest.mark.parametrize(("make", "field"), [
    (lambda: ScheduledAction(5, []), "transactions"),
    (lambda: ScheduledAction(5, ["not base64!"]), r"transactions\[0\]"),
    (lambda: CreateSession(10, 20, actions=[ScheduledAction(25, [TX])]), r"actions\[0\].slot"),
])
def test_bad_actions_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


def test_a_malformed_action_result_names_its_field() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_pubsub('{"jsonrpc":"2.0","method":"actionNotification","params":{'
                      '"subscription":1,"result":{"slot":3,"status":"executed"}}}')
    assert info.value.path == "$.params.result.actionIndex"


def _action_link(sim: LocalSimulator, session_id: str, replay: int | None = None
                 ) -> websocket.WebSocket:
    ws = websocket.create_connection(
        pubsub_url(resolve_rpc_url(sim.url, f"/backtest/{session_id}")), timeout=5)
    ws.send(encode_subscribe(ActionSubscribe(1, replay)))
    assert isinstance(decode_pubsub(ws.recv()), SubscribeAck)
    return ws


def test_one_result_per_action_in_order_through_a_drop_of_the_subscription(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 80
    actions = [ScheduledAction(first + 40, [TX], "late"), ScheduledAction(first + 5, [TX, TX]),
               ScheduledAction(first + 40, [TX], "tie"), ScheduledAction(end, [TX], "last")]
    expected = sim.expected(first, end, actions=actions).actions
    assert [index for index, _ in expected] == [1, 0, 2, 3]
    control, session_id, _ = create(sim, first, end, actions=actions)
    link = _action_link(sim, session_id)
    results: list[ActionResultNotification] = []

    def advance(count: int) -> bool:
        control.send(encode_request(ContinueParams(count)))
        _, last = read_until(control, ReadyForContinue, Completed)[-1]
        return isinstance(last, Completed)

    advance(30)  # past the first action only
    msg = decode_pubsub(link.recv())
    assert isinstance(msg, ActionResultNotification)
    results.append(msg)
    link.close()  # dropped: the next results come by replay
    advance(30)
    link = _action_link(sim, session_id, replay=results[-1].slot + 1)
    done = advance(1000)
    assert done
    while len(results) < len(actions):
        msg = decode_pubsub(link.recv())
        assert isinstance(msg, ActionResultNotification), msg
        results.append(msg)
    link.close()
    control.close()
    assert [(r.action_index, r.slot) for r in results] == expected
    assert [r.label for r in results] == ["", "late", "tie", "last"]
    assert [len(r.signatures) for r in results] == [2, 1, 1, 1]
    assert len({s for r in results for s in r.signatures}) == 5  # each execution signed once
