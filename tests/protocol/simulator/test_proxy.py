"""The TCP fault proxy, driven by bare websocket-client connections to the simulator."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
import websocket

from actors import ManagedSessionError
from actors.frontdoors.handles import spawn_transaction_subscription
from protocol import (
    Attach,
    ContinueParams,
    TransactionNotification,
    decode_response,
    encode_request,
)
from protocol.messages import Completed, Error, ReadyForContinue, SessionAttached
from protocol.simulator import LocalSimulator, ServerLiveness
from protocol.simulator.proxy import FAULT_KINDS, FaultProxy
from tests.support.harness import FAST, FAULT_POLICY, no_leaks, wait_for
from tests.support.wire import control, create, drain_pubsub, read_until, subscribe

SHORT = ServerLiveness(keepalive_interval=0.25, keepalive_deadline=1.0)
CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError)


pytestmark = pytest.mark.backtest_simulator(seed=5, slots=300, liveness=SHORT)


@pytest.fixture
def proxy(sim: LocalSimulator) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", sim.port) as p:
        yield p


def assert_open_and_silent(ws: websocket.WebSocket) -> None:
    """No byte arrives, and the socket is neither closed nor reset."""
    ws.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        ws.sock.recv(1)  # EOF would return b"", a reset would raise ConnectionResetError
    ws.sock.setblocking(True)


def test_url_and_passthrough_with_classification(sim: LocalSimulator, proxy: FaultProxy
                                                 ) -> None:
    url = proxy.url_for(sim.url)
    assert url == f"ws://127.0.0.1:{proxy.port}/backtest" and proxy.port != sim.port
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=url)
    addrs = list(sim.addresses[:2])
    sub, early = subscribe(sim, sid, "transactions", addrs, url=url)
    assert proxy.connections("control") == 1 and proxy.connections("pubsub") == 1
    assert proxy.connections("pubsub", session_id=sid) == 1
    assert proxy.connections("pubsub", session_id="backtest_other") == 0
    ws.send(encode_request(ContinueParams(advance_count=30)))
    read_until(ws, Completed)
    notes = early + drain_pubsub(sub)
    signatures = list(dict.fromkeys(n.signature for n in notes
                                    if isinstance(n, TransactionNotification)))
    expected = sim.expected(first, first + 30, transactions=addrs)
    assert signatures == expected.signatures and signatures
    stats = proxy.stats()
    assert stats["accepted"] == 2 and stats["bytes_up"] > 0 and stats["bytes_down"] > 0
    assert sim.upgrade_requests() == {"control": 1, "pubsub": 1}


def test_reset_both_sides_reaches_client_and_server_at_once() -> None:
    # The server's deadline is long: only the RST can end the owner's connection quickly.
    with LocalSimulator(seed=5, slots=300) as sim, FaultProxy("127.0.0.1", sim.port) as p:
        first, _ = sim.available_range()
        ws, sid, _ = create(sim, first, first + 30, url=p.url_for(sim.url),
                            disconnect_timeout_secs=60)
        assert p.reset("control") == 1
        with pytest.raises(CLOSED):
            ws.recv()
        wait_for(lambda: not sim.session_stats(sid).owner_connected, 0.5,
                 "the server to see the reset")
        assert sim.liveness_counts()["dead"] == 0
        assert p.counts()["reset"] == 1 and p.connections() == 0


def test_reset_client_side_only_leaves_the_server_side_to_its_keepalive(
        sim: LocalSimulator, proxy: FaultProxy) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=proxy.url_for(sim.url),
                        disconnect_timeout_secs=60)
    reset_at = time.monotonic()
    assert proxy.reset("control", side="client") == 1
    with pytest.raises(CLOSED):
        ws.recv()
    assert sim.session_stats(sid).owner_connected  # the server heard nothing
    wait_for(lambda: not sim.session_stats(sid).owner_connected,
             SHORT.keepalive_deadline + 1, "the server's keepalive")
    assert time.monotonic() - reset_at >= SHORT.keepalive_deadline * 0.9
    assert sim.liveness_counts()["dead"] == 1


def test_reset_upstream_side_only_leaves_the_client_open_and_silent(
        sim: LocalSimulator, proxy: FaultProxy) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=proxy.url_for(sim.url),
                        disconnect_timeout_secs=60)
    assert proxy.reset("control", side="upstream") == 1
    wait_for(lambda: not sim.session_stats(sid).owner_connected, 0.5, "the server's RST")
    ws.ping(b"anyone?")
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data_frame(control_frame=True)
    assert_open_and_silent(ws)


def test_half_open_client_side_vanishes_without_a_word(sim: LocalSimulator,
                                                       proxy: FaultProxy) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=proxy.url_for(sim.url),
                        disconnect_timeout_secs=60)
    assert proxy.half_open("control") == 1
    ws.send(encode_request(ContinueParams()))  # goes nowhere
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    assert_open_and_silent(ws)
    assert sim.session_stats(sid).continues_received == 0
    wait_for(lambda: not sim.session_stats(sid).owner_connected,
             SHORT.keepalive_deadline + 1, "the server to find the half-open owner dead")
    assert_open_and_silent(ws)  # even after the server closed its side: not a word
    assert proxy.stats()["forgotten_sockets"] == 1
    assert proxy.counts()["half_open"] == 1


def test_half_open_upstream_side(sim: LocalSimulator, proxy: FaultProxy) -> None:
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=proxy.url_for(sim.url),
                        disconnect_timeout_secs=60)
    assert proxy.half_open("control", side="upstream") == 1
    ws.ping(b"anyone?")
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data_frame(control_frame=True)
    # The server's side is forgotten: it hears nothing and finds the owner dead.
    wait_for(lambda: not sim.session_stats(sid).owner_connected,
             SHORT.keepalive_deadline + 1, "the server's keepalive")


def test_blackhole_holds_both_ways_until_healed() -> None:
    with LocalSimulator(seed=5, slots=300) as sim, FaultProxy("127.0.0.1", sim.port) as p:
        first, _ = sim.available_range()
        ws, sid, _ = create(sim, first, first + 30, url=p.url_for(sim.url))
        assert p.blackhole("control") == 1
        assert p.connections("control") == 1  # still there, just silent
        ws.send(encode_request(ContinueParams(advance_count=3)))
        ws.ping(b"anyone?")
        ws.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv_data_frame(control_frame=True)
        assert sim.session_stats(sid).continues_received == 0
        assert p.heal("control") == 1
        ws.settimeout(5)
        read_until(ws, ReadyForContinue)  # what was held went through
        assert sim.session_stats(sid).continues_received == 1
        assert p.counts()["blackhole"] == 1


def test_latency_is_added_to_each_direction(sim: LocalSimulator, proxy: FaultProxy) -> None:
    url = proxy.url_for(sim.url)
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=url)
    proxy.latency(150, "control")
    started = time.monotonic()
    ws.send(encode_request(ContinueParams()))
    read_until(ws, ReadyForContinue)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.3  # 150 ms up, 150 ms down (chunks pipelined)
    started = time.monotonic()
    subscribe(sim, sid, "transactions", list(sim.addresses[:1]), url=url)  # not delayed
    assert time.monotonic() - started < 0.15
    proxy.latency(0)
    started = time.monotonic()
    ws.send(encode_request(ContinueParams()))
    read_until(ws, ReadyForContinue)
    assert time.monotonic() - started < 0.15
    assert proxy.counts()["latency"] == 2


def test_slicer_cuts_frames_into_tiny_segments_and_nothing_is_lost(
        sim: LocalSimulator, proxy: FaultProxy) -> None:
    url = proxy.url_for(sim.url)
    proxy.slicer(1, 8)
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 20, url=url)
    addrs = list(sim.addresses[:2])
    sub, early = subscribe(sim, sid, "transactions", addrs, url=url)
    ws.send(encode_request(ContinueParams(advance_count=20)))
    read_until(ws, Completed)
    notes = early + drain_pubsub(sub)
    signatures = list(dict.fromkeys(n.signature for n in notes
                                    if isinstance(n, TransactionNotification)))
    assert signatures == sim.expected(first, first + 20, transactions=addrs).signatures
    stats = proxy.stats()
    assert stats["slices"] >= (stats["bytes_up"] + stats["bytes_down"]) / 8
    assert proxy.counts()["slicer"] == 1


def test_bandwidth_cap_paces_the_stream(sim: LocalSimulator, proxy: FaultProxy) -> None:
    ws = control(sim, url=proxy.url_for(sim.url))
    proxy.bandwidth(50_000, "control")
    started = time.monotonic()
    ws.send("x" * 40_000)  # 40 KB at 50 KB/s: about 0.8 s on the way up
    _, msg = decode_response(ws.recv())
    elapsed = time.monotonic() - started
    assert isinstance(msg, Error) and msg.error.kind == "invalidRequest"
    assert 0.6 <= elapsed < 3.0
    proxy.bandwidth(None, "control")
    started = time.monotonic()
    ws.send("x" * 40_000)
    ws.recv()
    assert time.monotonic() - started < 0.3
    assert proxy.counts()["bandwidth"] == 2


def test_refuse_stops_accepting_but_live_connections_go_on(sim: LocalSimulator,
                                                           proxy: FaultProxy) -> None:
    url = proxy.url_for(sim.url)
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=url)
    started = time.monotonic()
    proxy.refuse(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
    ws.send(encode_request(ContinueParams()))
    read_until(ws, ReadyForContinue)  # the live connection is untouched

    def connects() -> bool:
        try:
            control(sim, url=url).close()
            return True
        except ConnectionRefusedError:
            return False

    wait_for(connects, 5, "the proxy to accept again")
    assert time.monotonic() - started >= 0.45
    assert proxy.counts()["refuse"] == 1


def test_faults_filter_by_kind_of_traffic(sim: LocalSimulator, proxy: FaultProxy) -> None:
    url = proxy.url_for(sim.url)
    first, _ = sim.available_range()
    ws, sid, _ = create(sim, first, first + 30, url=url)
    sub, _ = subscribe(sim, sid, "transactions", list(sim.addresses[:1]), url=url)
    assert proxy.reset("pubsub") == 1
    with pytest.raises(CLOSED):
        sub.recv()
    ws.send(encode_request(ContinueParams()))
    read_until(ws, ReadyForContinue)  # control is untouched
    wait_for(lambda: sim.session_stats(sid).subscribers == 0, 1, "the subscriber gone")
    assert proxy.blackhole("pubsub") == 0 and proxy.counts()["blackhole"] == 0


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # bound, never listening: connects are refused
        with FaultProxy("127.0.0.1", dead_port) as p:
            with pytest.raises((websocket.WebSocketException, ConnectionError)):
                websocket.create_connection(p.url_for(f"ws://127.0.0.1:{dead_port}/backtest"),
                                            timeout=2)
            assert p.connections() == 0


def test_every_kind_counted_and_nothing_left_behind(sim: LocalSimulator) -> None:
    gc.collect()
    process = psutil.Process()
    threads_before = threading.active_count()
    fds_before = process.num_fds()
    first, _ = sim.available_range()
    clients = []
    with FaultProxy("127.0.0.1", sim.port) as p:
        url = p.url_for(sim.url)
        for _ in range(4):
            clients.append(create(sim, first, first + 10, url=url)[0])
        p.latency(1)
        p.slicer(2, 4)
        p.bandwidth(10**7)
        p.blackhole("control")
        p.heal()
        assert p.half_open("control") == 4
        clients.append(create(sim, first, first + 10, url=url)[0])
        assert p.reset("control", side="client") == 1
        clients.append(create(sim, first, first + 10, url=url)[0])
        p.refuse(0.01)
        p.lose_pongs(1)
        p.corrupt_frames(1)
        counts = p.counts()
        assert set(counts) == set(FAULT_KINDS)
        assert all(counts[kind] >= 1 for kind in FAULT_KINDS), counts
    for ws in clients:
        ws.close()
    gc.collect()
    wait_for(lambda: threading.active_count() == threads_before, 2, "the proxy thread gone")
    wait_for(lambda: process.num_fds() <= fds_before, 2,
             f"sockets closed (fds {process.num_fds()} vs {fds_before})")
    listening = {c.laddr.port for c in process.net_connections() if c.status == "LISTEN"}
    assert p.port not in listening


def test_attach_through_the_proxy_after_reset(sim: LocalSimulator, proxy: FaultProxy) -> None:
    """A re-attach through the proxy: the session survives a reset of its owner."""
    url = proxy.url_for(sim.url)
    first, _ = sim.available_range()
    ws, sid, msgs = create(sim, first, first + 30, url=url, disconnect_timeout_secs=60)
    proxy.reset("control")
    wait_for(lambda: not sim.session_stats(sid).owner_connected, 1, "the owner gone")
    ws2 = control(sim, url=url)
    ws2.send(encode_request(Attach(sid, msgs[-1][0])))
    assert isinstance(decode_response(ws2.recv())[1], SessionAttached)
    ws2.send(encode_request(ContinueParams()))
    read_until(ws2, ReadyForContinue)
    assert sim.session_stats(sid).continues_received == 1


LEAK_GRACE = FAST.graceful_close + 2


@pytest.mark.backtest_simulator(seed=61, slots=200)
def test_fault_proxy_with_lose_pongs_still_forwards_a_refused_upgrade(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """FaultProxy.lose_pongs parses everything after the HTTP response head as
    WebSocket frames, so the body of a non-101 answer ("no such session\\n": 'n',
    'o' reads as a 113-byte frame) is held for ever and the client sees the
    connection drop. A subscription handle for a gone session then reports
    "Connection to remote host was lost", retryable, and spends its whole reconnect
    budget (300 s by default) instead of failing at once on HTTP 404 as it does
    without the toxic. The toxic should only touch frames after a 101."""
    sim, proxy = net
    proxy.lose_pongs(2, "pubsub")
    endpoint = proxy.url_for(sim.url.replace("ws://", "http://") + "/no-such-session")
    with no_leaks(LEAK_GRACE):
        # A subscription handle returns once subscribed, so a gone session fails the
        # spawn itself, at once, with the 404.
        with pytest.raises(ManagedSessionError, match="HTTP 404"):
            spawn_transaction_subscription(endpoint, sim.addresses[:1], timing=FAST,
                                           policy=FAULT_POLICY)
