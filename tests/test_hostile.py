"""Hostile input on both sides, limits of the simulator, secrets, and TLS."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import websocket

from actors import ManagedBacktestSession, ManagedSessionError, Reconnecting
from protocol import (
    Attach,
    CreateSession,
    ReconnectPolicy,
    Timing,
    decode_response,
    encode_request,
)
from protocol.simulator import LocalSimulator, ServerLimits
from tests.support.harness import FAST, QUICK_RETRY, check_exact, drive, no_leaks, start, wait_for
from tests.support.wire import control, create

pytestmark = pytest.mark.backtest_simulator(seed=17, slots=300)


# --- client side: what the server may send ----------------------------------------------

BAD_CONTROL_FRAMES = [
    '{"method":"slotNotification"',                          # truncated
    '{"method":"slotNotification","params":"abc"}',           # wrong type
    '{"method":"status","params":{"status":7}}',              # wrong nested type
    "[]", "null", "42",                                        # not an object
    b"\x00\x01\x02binary garbage",                             # binary, not JSON
    b"\xc3\x28",                                               # invalid UTF-8
]
HARMLESS_CONTROL_FRAMES = [
    '{"seqId":1,"method":"status","params":{"status":"stale"}}',                 # old seqId
    '{"method":"sessionCreated","params":{"session_id":"x","rpc_endpoint":"/y"}}',  # late
    '{"method":"success"}',                                                       # stray ack
    '{"method":"someFutureMethod","params":{"x":1}}',                            # unknown
]
BAD_PUBSUB_FRAMES = [
    '{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":{"slot":"x"},'
    '"subscription":1}}',
    '{"jsonrpc":"2.0","method":"accountDiffNotification","params":{"result":{}}}',
    '{"jsonrpc":"2.0","result":"not an id","id":1}',
    '{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal"}}',     # unsolicited
    '{"jsonrpc":"2.0","method":"transact',
]
HARMLESS_PUBSUB_FRAMES = [
    '{"jsonrpc":"2.0","method":"transactionNotification","params":{"result":{"slot":1,'
    '"signature":"zzz"},"subscription":999}}',                # unknown subscription
    '{"jsonrpc":"2.0","result":77,"id":999}',                # ack for no request
    '{"jsonrpc":"2.0","method":"slotNotification","params":{"result":1}}',  # unknown method
]


def test_malformed_truncated_wrong_type_and_out_of_order_frames(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 80
    addrs = list(sim.addresses[:3])
    slots = sim.expected(first, end).slots
    session = start(sim, first, end)
    try:
        session.subscribe_transactions(addrs)
        session.subscribe_account_diffs(addrs)
        sid = session.session_info.session_id
        at = iter(slots[3:-3])
        for frame in BAD_CONTROL_FRAMES + HARMLESS_CONTROL_FRAMES:
            sim.faults.malformed("control", frame=frame, at_slot=next(at), session_id=sid)
        for frame in BAD_PUBSUB_FRAMES + HARMLESS_PUBSUB_FRAMES:
            sim.faults.malformed("subscriptions", frame=frame, at_slot=next(at),
                                 session_id=sid)
        events = drive(session)
        stats = session.stats()
    finally:
        session.shutdown()
    check_exact(events, sim.expected(first, end, transactions=addrs, account_diffs=addrs))
    assert stats["malformed_frames"] == len(BAD_CONTROL_FRAMES) + 2 * len(BAD_PUBSUB_FRAMES)
    assert stats["reconnects"] == {"control": 0, "transactions": 0, "account_diffs": 0}
    assert sim.fault_counts()["malformed"] == (len(BAD_CONTROL_FRAMES)
                                               + len(HARMLESS_CONTROL_FRAMES)
                                               + 2 * len(BAD_PUBSUB_FRAMES)
                                               + 2 * len(HARMLESS_PUBSUB_FRAMES))


def test_oversized_frame_is_refused_by_its_header_and_recovered(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 40
    session = start(sim, first, end, max_frame_size=64 * 1024)
    try:
        session.subscribe_transactions(sim.addresses[:2])
        slot = sim.expected(first, end).slots[10]
        sim.faults.malformed("transactions", frame="x" * (256 * 1024), at_slot=slot)
        events = drive(session)
        stats = session.stats()
    finally:
        session.shutdown()
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))
    assert stats["reconnects"]["transactions"] == 1
    reasons = [e.status.reason for e in events if hasattr(e, "status")
               and isinstance(e.status, Reconnecting)]
    assert reasons == ["FrameTooLarge: frame of 262144 bytes exceeds max_frame_size 65536"]


def test_server_that_never_answers_the_upgrade_cannot_hang_start() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts TCP (kernel backlog), never speaks
    port = listener.getsockname()[1]
    timing = Timing(connect=0.3, handshake=0.3, keepalive_interval=0.05,
                    keepalive_deadline=0.25, graceful_close=0.5)
    policy = ReconnectPolicy(initial=0.01, max_delay=0.02, max_attempts=2, jitter=0)
    started = time.monotonic()
    try:
        with no_leaks(2.0), pytest.raises(ManagedSessionError) as info:
            ManagedBacktestSession.start(f"ws://127.0.0.1:{port}", "key",
                                         CreateSession(1, 2), timing=timing, policy=policy)
    finally:
        listener.close()
    assert info.value.kind == "create"
    assert "timed out" in str(info.value)
    assert time.monotonic() - started < 3 * 0.3 + 1.0


def test_handshake_answer_later_than_the_bound_restarts_the_link(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    timing = Timing(connect=2, handshake=0.3, keepalive_interval=0.05, keepalive_deadline=0.25,
                    graceful_close=1)
    session = start(sim, first, first + 20, timing=timing)
    try:
        sim.faults.delay_handshake(1.0, "transactions")
        session.subscribe_transactions(sim.addresses[:1])
        events = drive(session)
    finally:
        session.shutdown()
    reasons = [e.status.reason for e in events if hasattr(e, "status")
               and isinstance(e.status, Reconnecting)]
    assert reasons == ["no handshake answer within 0.3s"]
    check_exact(events, sim.expected(first, first + 20, transactions=sim.addresses[:1]))


# --- server side: what a client may send ------------------------------------------------

def test_server_closes_oversized_frame_with_1009() -> None:
    with LocalSimulator(limits=ServerLimits(max_frame_size=4096)) as simulator:
        ws = control(simulator)
        ws.send("x" * 5000)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1009
        under = control(simulator)
        under.send("y" * 4000)  # under the limit: an error answer, the connection stays
        _, msg = decode_response(under.recv())
        assert msg.error.kind == "invalidRequest"  # type: ignore[union-attr]


def test_server_connection_limit_per_client() -> None:
    with LocalSimulator(limits=ServerLimits(max_connections_per_client=3)) as simulator:
        held = [control(simulator) for _ in range(3)]
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            control(simulator)
        assert info.value.status_code == 429
        held.pop().close()
        wait_for(lambda: _connects(simulator), 5, "a free connection slot")
        assert simulator.fault_counts()["connection_limit"] >= 1


def _connects(simulator: LocalSimulator) -> bool:
    try:
        control(simulator).close()
        return True
    except websocket.WebSocketBadStatusException:
        return False


def test_server_closes_a_client_that_never_upgrades() -> None:
    with LocalSimulator(limits=ServerLimits(handshake_timeout=0.3)) as simulator:
        silent = socket.create_connection(("127.0.0.1", simulator.port))
        silent.settimeout(5)
        started = time.monotonic()
        data = silent.recv(1024)  # the server gives up on us: EOF (or an error answer)
        elapsed = time.monotonic() - started
        assert elapsed >= 0.25 and elapsed < 2.0
        assert data == b"" or data.startswith(b"HTTP/1.1 ")
        silent.close()


def test_attach_with_another_api_key_is_owner_mismatch() -> None:
    with LocalSimulator(extra_api_keys=("second-key",)) as simulator:
        first, _ = simulator.available_range()
        owner, sid, _ = create(simulator, first, first + 5)
        owner.close()
        intruder = control(simulator, api_key="second-key")
        intruder.send(encode_request(Attach(sid, None)))
        _, msg = decode_response(intruder.recv())
        assert msg.error.kind == "sessionOwnerMismatch"  # type: ignore[union-attr]
        assert msg.error.terminal  # type: ignore[union-attr]


def test_api_key_never_reaches_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-7f3a9c1e5b"
    wrong = "sk-wrong-0d2b4f6a8c"
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with LocalSimulator(api_key=secret, seed=2, slots=100) as simulator:
        first, _ = simulator.available_range()
        session = ManagedBacktestSession.start(simulator.url, secret,
                                               CreateSession(first, first + 15),
                                               timing=FAST, policy=QUICK_RETRY)
        try:
            session.subscribe_transactions(simulator.addresses[:1])
            simulator.faults.drop("control")
            drive(session)
        finally:
            session.shutdown()
        with pytest.raises(ManagedSessionError) as info:
            ManagedBacktestSession.start(simulator.url, wrong, CreateSession(first, first + 5),
                                         timing=FAST, policy=QUICK_RETRY)
        errors.append(str(info.value))
        errors.append(repr(info.value))
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert len(caplog.records) > 20  # the run did log (debug included)
    for key in (secret, wrong):
        assert key not in text
        assert all(key not in e for e in errors)


# --- TLS ------------------------------------------------------------------------------------

@pytest.fixture
def tls_sim(tmp_path: Path) -> Iterator[tuple[LocalSimulator, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with LocalSimulator(seed=4, slots=100, ssl_context=server_context) as simulator:
        yield simulator, ca_file


def test_wss_rejects_an_untrusted_certificate_at_once(tls_sim: tuple[LocalSimulator, Path]
                                                      ) -> None:
    simulator, _ = tls_sim
    assert simulator.url.startswith("wss://")
    first, _ = simulator.available_range()
    with pytest.raises(ManagedSessionError) as info:
        ManagedBacktestSession.start(simulator.url, "local-dev-key",
                                     CreateSession(first, first + 5), timing=FAST,
                                     policy=QUICK_RETRY)
    assert info.value.kind == "create"
    assert "certificate not trusted" in str(info.value)
    assert simulator.upgrade_requests() == {}  # refused before any HTTP was sent


def test_wss_accepts_the_certificate_with_its_ca(tls_sim: tuple[LocalSimulator, Path]) -> None:
    simulator, ca_file = tls_sim
    first, _ = simulator.available_range()
    session = ManagedBacktestSession.start(simulator.url, "local-dev-key",
                                           CreateSession(first, first + 30), timing=FAST,
                                           policy=QUICK_RETRY,
                                           sslopt={"ca_certs": str(ca_file)})
    try:
        session.subscribe_transactions(simulator.addresses[:2])
        assert session.session_info.rpc_endpoint.startswith("https://127.0.0.1:")
        events = drive(session)
    finally:
        session.shutdown()
    check_exact(events, simulator.expected(first, first + 30,
                                           transactions=simulator.addresses[:2]))
