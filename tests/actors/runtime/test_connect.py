"""Connecting: ``Timing.connect`` bounds TCP, TLS and the upgrade together, and an abort
or an expired deadline ends the attempt at once, wherever it is, leaking nothing."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

from actors import (
    ManagedBacktestSession,
    ManagedSessionError,
)
from actors.runtime.connection import ConnectFailed, Opened
from protocol import CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import (
    Recorder,
    bounded,
    no_leaks,
    start_connection,
    wait_for,
)
from tests.support.scripted import RawUpgradeServer


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_abort_while_the_upgrade_hangs_ends_at_once_and_leaks_nothing() -> None:
    server = RawUpgradeServer(lambda request: None)  # reads the upgrade, never answers
    owner = Recorder.start()
    try:
        fds = _fds()
        with no_leaks(3.0):
            for _ in range(20):
                n = len(server.conns)
                conn = start_connection(f"ws://127.0.0.1:{server.port}/", owner,
                                        connect_timeout=30.0)
                wait_for(lambda n=n: len(server.conns) > n, 3, "accepted")
                t0 = time.monotonic()
                conn.abort()
                assert conn.join(2.0)
                assert time.monotonic() - t0 < 1.0
        seen = owner.ask("get")
        assert all(isinstance(m, ConnectFailed) for m in seen) and len(seen) == 20
        server.close()
        wait_for(lambda: _fds() <= fds - 1, 3, f"fds back ({_fds()} vs {fds})")
    finally:
        server.close()
        owner.stop()


def test_abort_during_the_tcp_connect_writes_no_upgrade_and_ends_the_thread() -> None:
    """abort() (and expire_connect()) before websocket-client has its socket: the TCP
    connect is held up by a full accept queue (SYNs dropped), then the server
    accepts and never answers. Nothing can be cut during the TCP connect itself
    (it ends when the kernel's SYN retry gets through: 1 s, 3 s, 7 s after the
    first), but once it ends, the upgrade is not written and the thread ends at
    once. Before, the upgrade went out and the thread then waited out
    connect_timeout (10 s) for an answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue: the next SYN is dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    owner = Recorder.start()
    accepted: list[socket.socket] = []
    conn = start_connection(f"ws://127.0.0.1:{port}/", owner, connect_timeout=10.0)
    try:
        wait_for(lambda: any(t.name == "connect-ws" for t in threading.enumerate()), 2,
                 "the connect thread")
        assert conn.expire_connect()  # "cut": the deadline passed
        conn.abort()
        # The server frees its queue now, and keeps accepting: a SYN retry gets through.
        listener.settimeout(0.05)
        deadline = time.monotonic() + 8.0  # past the 7 s retry, short of connect_timeout
        while not conn.join(0.0) and time.monotonic() < deadline:
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass
        assert conn.join(0.5), "still connecting: " + str(
            [t.name for t in threading.enumerate() if t.name.startswith("connect-")])
        for peer in accepted:
            try:
                written = peer.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                written = b""
            assert not written.startswith(b"GET"), written
    finally:
        for s in fillers + accepted:
            s.close()
        listener.close()
        conn.join(12.0)
        owner.stop()


def test_expire_connect_racing_a_successful_upgrade() -> None:
    """Whatever the order, one of Opened/ConnectFailed; expire True => no Opened."""
    with LocalSimulator(seed=3, slots=50) as sim:
        fds = _fds()
        with no_leaks(5.0):
            rng = random.Random(7)
            for i in range(60):
                owner = Recorder.start()
                conn = start_connection(sim.url.rstrip("/") + "/backtest", owner,
                                        connect_timeout=5.0,
                                        headers={"X-API-Key": DEFAULT_API_KEY})
                delay = rng.random() * 0.004
                t_end = time.monotonic() + delay
                while time.monotonic() < t_end:
                    pass
                expired = conn.expire_connect()
                wait_for(lambda owner=owner: owner.ask("get"), 5, "an outcome")
                conn.abort()
                assert conn.join(3.0), i
                seen = owner.ask("get")
                kinds = [type(m) for m in seen]
                assert kinds in ([Opened], [ConnectFailed]) or kinds[:1] == [Opened], kinds
                if expired:
                    assert kinds == [ConnectFailed], (i, kinds)
                owner.stop()
        wait_for(lambda: _fds() <= fds, 3, f"fds back ({_fds()} vs {fds})")




class _TricklingServer:
    """Reads an upgrade request, then answers ``101`` one byte per ``pace`` seconds.

    Records, per connection, how long the client stayed before closing.
    Its own thread; every connection ends within ``limit`` seconds.
    """

    def __init__(self, pace: float = 0.1, limit: float = 8.0) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._pace = pace
        self._limit = limit
        self._stop = threading.Event()
        self.held: list[float] = []  # seconds from accept to the client's close
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="trickle")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" + (
            b"X-Pad: " + b"a" * 4000 + b"\r\n")
        conn.settimeout(self._pace)
        request = b""
        sent = 0
        with conn:
            while not self._stop.is_set() and time.monotonic() - accepted < self._limit:
                try:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break  # the client closed (or shut down) its socket
                    request += chunk
                except TimeoutError:
                    pass
                except OSError:
                    break
                if b"\r\n\r\n" in request and sent < len(reply):
                    try:
                        conn.sendall(reply[sent:sent + 1])
                    except OSError:
                        break
                    sent += 1
            self.held.append(time.monotonic() - accepted)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(2)
        for thread in self._threads:
            thread.join(2)


def test_trickled_upgrade_reply_is_bounded_by_timing_connect() -> None:
    """The whole connect (TCP + TLS + upgrade) fits in ``Timing.connect``."""
    timing = Timing(connect=1.0, handshake=1.0, keepalive_interval=0.05,
                    keepalive_deadline=0.25, graceful_close=0.5)
    policy = ReconnectPolicy(initial=0.01, max_delay=0.02, max_attempts=1, jitter=0)
    server = _TricklingServer(pace=0.1, limit=8.0)
    started = time.monotonic()
    try:
        with no_leaks(3.0):
            error = bounded(lambda: ManagedBacktestSession.start(
                f"ws://127.0.0.1:{server.port}", "key", CreateSession(1, 2), timing=timing,
                policy=policy), 20)
        elapsed = time.monotonic() - started
        wait_for(lambda: len(server.held) == 2, 5, "both connections to end")
    finally:
        server.close()
    assert isinstance(error, ManagedSessionError) and error.kind == "create"
    assert "connect timed out after 1.0s" in str(error)
    # Two attempts (the first and one restart), each cut at the connect bound.
    assert elapsed < 2 * timing.connect + 1.0
    assert all(held < timing.connect + 0.5 for held in server.held), server.held
