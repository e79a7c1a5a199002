"""The local simulator driven by bare websocket-client connections (no actors)."""

from __future__ import annotations

import gc
import socket
import threading
import time

import psutil
import pytest
import websocket

from actors import ConnectionChanged, ManagedBacktestSession, Reconnecting
from actors import ReadyForContinue as ReadyEvent  # the wire's ReadyForContinue is below
from protocol import (
    AccountDiffNotification,
    Attach,
    BacktestError,
    Completed,
    ContinueParams,
    CreateSession,
    Error,
    JsonRpcError,
    ProtocolError,
    ReadyForContinue,
    Resume,
    SessionAttached,
    SlotNotification,
    Success,
    TransactionNotification,
    Unsubscribe,
    UnsubscribeAck,
    decode_pubsub,
    decode_response,
    encode_request,
    encode_subscribe,
)
from protocol.messages import Close
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.chain import Chain
from protocol.simulator.engine import Session
from tests.support.wire import control, create, drain_pubsub, read_until, subscribe

pytestmark = pytest.mark.backtest_simulator(seed=3, slots=400)


def test_full_session_matches_the_chain(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 120
    tx_addrs, diff_addrs = list(sim.addresses[:3]), list(sim.addresses[2:5])
    ws, sid, msgs = create(sim, first, end)
    txs, _ = subscribe(sim, sid, "transactions", tx_addrs)
    diffs, _ = subscribe(sim, sid, "account_diffs", diff_addrs)
    slots = [m.slot for _, m in msgs if isinstance(m, SlotNotification)]
    while True:
        ws.send(encode_request(ContinueParams(advance_count=7)))
        batch = read_until(ws, ReadyForContinue, Completed)
        slots += [m.slot for _, m in batch if isinstance(m, SlotNotification)]
        if isinstance(batch[-1][1], Completed):
            break
    signatures: list[str] = []
    for note in drain_pubsub(txs):
        assert isinstance(note, TransactionNotification)
        if note.signature not in signatures:  # a tx mentioning two addresses comes twice
            signatures.append(note.signature)
    diff_keys = [(n.signature, n.account) for n in drain_pubsub(diffs)
                 if isinstance(n, AccountDiffNotification)]
    expected = sim.expected(first, end, transactions=tx_addrs, account_diffs=diff_addrs)
    assert slots == expected.slots
    assert signatures == expected.signatures
    assert diff_keys == expected.diff_keys
    assert len(expected.signatures) > 100 and len(expected.diff_keys) > 100
    assert sim.session_stats(sid).blocks_executed == len(expected.slots) - 1


def test_wrong_api_key_gets_401(sim: LocalSimulator) -> None:
    for key in ("wrong", ""):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            control(sim, api_key=key)
        assert info.value.status_code == 401
    assert sim.upgrade_requests()["control"] == 2


def test_attach_after_drop_replays_exactly_after_last_sequence(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, sid, msgs = create(sim, first, first + 50)
    ws.send(encode_request(ContinueParams(advance_count=5)))
    batch = read_until(ws, ReadyForContinue)
    seen = msgs + batch
    cut = len(msgs) + 3  # pretend the client only processed up to here
    last_sequence = seen[cut - 1][0]
    sim.faults.drop("control")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv()
    ws2 = control(sim)
    ws2.send(encode_request(Attach(sid, last_sequence)))
    _, attached = decode_response(ws2.recv())
    assert attached == SessionAttached(sid, f"/backtest/{sid}")
    replay = [decode_response(ws2.recv()) for _ in range(len(seen) - cut)]
    assert replay == seen[cut:]
    ws2.send(encode_request(Resume()))
    assert decode_response(ws2.recv()) == (None, Success())
    # The session goes on from where it was: one more continue, one more block.
    ws2.send(encode_request(ContinueParams()))
    more = read_until(ws2, ReadyForContinue)
    assert [m.slot for _, m in more if isinstance(m, SlotNotification)] == (
        sim.expected(first, first + 50).slots[6:7])
    assert more[0][0] == seen[-1][0] + 1  # sequence numbers continue without a gap
    assert sim.session_stats(sid).continues_received == 2


def test_replay_from_slot_redelivers_boundary_and_nothing_older(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 60)
    ws.send(encode_request(ContinueParams(advance_count=20)))
    slots = [m.slot for _, m in read_until(ws, ReadyForContinue)
             if isinstance(m, SlotNotification)]
    boundary = slots[10]
    sub, early = subscribe(sim, sid, "transactions", list(sim.addresses),
                           replay_from_slot=boundary)
    replayed = early + drain_pubsub(sub)
    got = sorted({n.slot for n in replayed if isinstance(n, TransactionNotification)})
    assert got == slots[10:]
    live, early = subscribe(sim, sid, "transactions", list(sim.addresses))
    assert early + drain_pubsub(live) == []  # no replay without replayFromSlot


def test_session_errors(sim: LocalSimulator) -> None:
    first, last = sim.available_range()
    ws = control(sim)
    ws.send(encode_request(CreateSession(last - 5, last + 5)))
    assert decode_response(ws.recv())[1] == Error(BacktestError(
        "bundleNotFound", {"start_slot": last - 5, "end_slot": last + 5}))
    ws.send(encode_request(Attach("backtest_nope", 3)))
    assert decode_response(ws.recv())[1] == Error(BacktestError(
        "sessionNotFound", {"session_id": "backtest_nope"}))
    ws.send('{"method": "continue", "params": {"advanceCount": "x"}}')
    _, msg = decode_response(ws.recv())
    assert isinstance(msg, Error) and msg.error.kind == "invalidRequest"
    assert "advance_count" in msg.error.fields["error"]

    owner, sid, _ = create(sim, first, first + 3)
    busy = control(sim)
    busy.send(encode_request(Attach(sid, None)))
    assert decode_response(busy.recv())[1].error.kind == "sessionOwnershipBusy"  # type: ignore[union-attr]
    owner.send(encode_request(ContinueParams(advance_count=10)))
    assert isinstance(read_until(owner, Completed)[-1][1], Completed)
    owner.send(encode_request(ContinueParams()))
    assert decode_response(owner.recv())[1] == Error(BacktestError("noMoreBlocks"))
    owner.send(encode_request(Close()))
    assert decode_response(owner.recv())[1] == Success()
    assert sid not in sim.session_ids()


# --- faults ---------------------------------------------------------------------------

def test_fault_drop_now_and_at_slot(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 40)
    sub, _ = subscribe(sim, sid, "transactions", list(sim.addresses))
    slots = sim.expected(first, first + 40).slots
    sim.faults.drop("transactions", at_slot=slots[3])
    ws.send(encode_request(ContinueParams(advance_count=5)))
    read_until(ws, ReadyForContinue)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            sub.recv()
    sim.faults.drop("control")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv()
    assert sim.fault_counts()["drop"] == 2


def test_fault_blackhole_keeps_tcp_open_but_silent(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 40)
    sim.faults.blackhole("control")
    sim.fault_counts()  # a round trip through the loop: the fault is applied
    ws.settimeout(0.3)
    ws.ping(b"are you there")
    ws.send(encode_request(ContinueParams()))
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data_frame(control_frame=True)  # no pong, no answer
    # The TCP connection is still established: nothing was closed or reset.
    assert ws.sock is not None and ws.sock.getpeername()[1] == sim.port
    ws.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        ws.sock.recv(1)  # would block: open and silent (EOF would return b"")
    assert sim.session_stats(sid).continues_received == 0


def test_fault_refuse_connections(sim: LocalSimulator) -> None:
    sim.faults.refuse(0.5)
    sim.fault_counts()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=1)
    deadline = started + 5
    while True:  # accepted again once the refusal ends
        try:
            control(sim).close()
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert time.monotonic() - started >= 0.45


def test_fault_delay_handshake(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    sim.faults.delay_handshake(0.4, "control")
    started = time.monotonic()
    create(sim, first, first + 5)
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    create(sim, first, first + 5)  # count=1: only the first is delayed
    assert time.monotonic() - started < 0.4


def test_fault_malformed_frame(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, _, _ = create(sim, first, first + 5)
    sim.faults.malformed("control")
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_response(ws.recv())


@pytest.mark.parametrize("status", [401, 503])
def test_fault_http_status(sim: LocalSimulator, status: int) -> None:
    sim.faults.http_status(status, "control")
    sim.fault_counts()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        control(sim)
    assert info.value.status_code == status
    control(sim).close()  # count=1: the next upgrade succeeds


def test_fifty_simulators_leave_nothing_behind() -> None:
    gc.collect()  # sockets left by earlier tests' clients must not count either way
    threads_before = threading.active_count()
    process = psutil.Process()
    fds_before = process.num_fds()
    ports = []
    for seed in range(50):
        with LocalSimulator(seed=seed, slots=50) as simulator:
            ports.append(simulator.port)
            control(simulator).close()
    gc.collect()
    assert threading.active_count() == threads_before
    assert process.num_fds() == fds_before
    listening = {c.laddr.port for c in process.net_connections() if c.status == "LISTEN"}
    assert listening.isdisjoint(ports)


def test_engine_refuses_a_continue_while_one_runs() -> None:
    """Sans-I/O: the state changes when the continue arrives, not when it is sent."""
    chain = Chain(0, 50)
    first, _ = chain.available_range()
    session, error = Session.open(CreateSession(first, first + 20), "key", chain)
    assert session is not None and error is None
    list(session.startup())
    steps = session.run_continue(ContinueParams(advance_count=3))
    assert session.check_continue() == BacktestError(
        "invalidRequest", {"error": "continue while not ready"})
    list(steps)
    assert session.check_continue() is None
    list(session.run_continue(ContinueParams(advance_count=100)))
    assert session.check_continue() == BacktestError("noMoreBlocks")
    assert session.continues_received == 2


def test_unsubscribe_and_bad_pubsub_requests(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 40)
    sub, _ = subscribe(sim, sid, "transactions", list(sim.addresses))
    sub.send(encode_subscribe(Unsubscribe(50, "transactions", 1)))
    sub.send(encode_subscribe(Unsubscribe(51, "transactions", 999)))
    sub.send('{"jsonrpc":"2.0","id":52,"method":"transactionSubscribe","params":[{"x":1}]}')
    sub.send("not json")
    answers = [decode_pubsub(sub.recv()) for _ in range(4)]
    assert answers[:2] == [UnsubscribeAck(50, True), UnsubscribeAck(51, False)]
    assert isinstance(answers[2], JsonRpcError) and answers[2].code == -32600
    assert "$.params[0].mentions" in answers[2].message
    assert isinstance(answers[3], JsonRpcError) and answers[3].code == -32700
    ws.send(encode_request(ContinueParams(advance_count=10)))
    read_until(ws, ReadyForContinue)
    notes = drain_pubsub(sub)
    assert notes and all(isinstance(n, TransactionNotification) and n.subscription != 1
                         for n in notes)


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_local_simulator_timing_finds_a_silent_connection_in_about_a_second(
        sim: LocalSimulator) -> None:
    """The CLI's fast keepalive, from Python: ``timing=sim.timing``."""
    timing = sim.timing
    assert (timing.keepalive_interval, timing.keepalive_deadline) == (0.25, 1.0)
    first, _ = sim.available_range()
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                           CreateSession(first, first + 300),
                                           timing=timing, policy=sim.policy)
    try:
        while not isinstance(session.next_event(timeout=10), ReadyEvent):
            pass
        sim.faults.blackhole("control")
        silenced = time.monotonic()
        while not (isinstance(event := session.next_event(timeout=5), ConnectionChanged)
                   and isinstance(event.status, Reconnecting)):
            pass
        found = time.monotonic() - silenced
        assert found < timing.keepalive_deadline + timing.keepalive_interval + 0.5, found
    finally:
        session.shutdown()


def test_chain_addresses_are_what_the_simulator_lists() -> None:
    assert LocalSimulator(seed=3).addresses == Chain(3).addresses
