"""Review of 7372796 (SimpleQueue inbox, cancelled timers compacted, connect thread and
upgrade client dropped): hostile users and networks."""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import threading
import time
from typing import Any

import pykka
import pytest

from actors import ManagedBacktestSession, SessionListener
from actors.runtime import timers
from actors.runtime.connection import ConnectFailed, Opened
from actors.runtime.inbox import SimpleInboxActor
from actors.runtime.timers import Scheduler
from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import Recorder, no_leaks, start, start_connection, wait_for
from tests.support.scripted import RawUpgradeServer

pytestmark = pytest.mark.timeout(60)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _heap_truth(core: Any) -> tuple[int, int, int]:
    """(entries, really dead entries, counted dead) under the core's lock."""
    with core.condition:
        dead = sum(1 for e in core.heap if e[3].stopped or e[2].cancelled)
        return len(core.heap), dead, core.dead_entries


# --- timers --------------------------------------------------------------------------


def test_concurrent_cancels_fires_and_lease_stops_keep_the_heap_exact() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            anchor = Scheduler()  # keeps the timer thread through the churn
            fired_after_cancel: list[Any] = []
            stop = threading.Event()

            def churn(seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    lease = Scheduler()
                    handles = [lease.schedule(rng.choice([0.0, 0.0005, 0.002, 30.0]),
                                              recorder, None) for _ in range(200)]
                    rng.shuffle(handles)
                    for h in handles[:150]:
                        h.cancel()
                        h.cancel()  # twice: counted once
                    if rng.random() < 0.5:
                        lease.stop()
                    for h in handles[:150]:
                        if h.pending:
                            fired_after_cancel.append(h)
                    if not lease.stopped:
                        for h in handles[150:]:
                            h.cancel()
                        lease.stop()

            workers = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
            for w in workers:
                w.start()
            deadline = time.monotonic() + 3.0
            worst = 0
            while time.monotonic() < deadline:
                size, _, _ = _heap_truth(anchor._core)
                worst = max(worst, size)
                time.sleep(0.01)
            stop.set()
            for w in workers:
                w.join(10)
                assert not w.is_alive()
            core = anchor._core
            size, dead, counted = _heap_truth(core)
            assert fired_after_cancel == []
            assert anchor.pending == 0
            # The count of dead entries is what the heap holds.
            assert (size, dead) == (dead, dead)
            assert counted == dead, (size, dead, counted, worst)
            anchor.stop()
            assert timers.timer_threads() == 0
    finally:
        recorder.stop()


def test_a_cancel_never_lets_a_far_timer_fire() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            lease = Scheduler()
            handles = [lease.schedule(0.3, recorder, i) for i in range(3000)]
            barrier = threading.Barrier(6)

            def cancel(part: list[Any]) -> None:
                barrier.wait(5)
                for h in part:
                    h.cancel()

            threads = [threading.Thread(target=cancel, args=(handles[i::6],))
                       for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert not any(h.pending for h in handles)
            assert lease.pending == 0
            size, dead, counted = _heap_truth(lease._core)
            assert size <= timers._COMPACT_MIN * 4 and counted == dead == size
            late = Scheduler()  # another lease, so stop() does not clear the heap
            marker = late.schedule(0.4, recorder, "marker")
            wait_for(lambda: "marker" in recorder.ask("get"), 3, "the marker")
            assert recorder.ask("get") == ["marker"]
            assert not marker.pending
            lease.stop()
            late.stop()
    finally:
        recorder.stop()


# --- connections: hostile servers --------------------------------------------------------


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


def test_shutdown_while_a_subscription_upgrade_hangs() -> None:
    with LocalSimulator(seed=21, slots=200) as sim, FaultProxy("127.0.0.1", sim.port) as proxy:
        first, _ = sim.available_range()
        with no_leaks(5.0):
            timing = Timing(connect=30.0, handshake=30.0, keepalive_interval=0.05,
                            keepalive_deadline=0.5, graceful_close=1.0)
            session = ManagedBacktestSession.start(
                proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, first + 20),
                timing=timing, policy=ReconnectPolicy(initial=0.01, max_delay=0.05))
            try:
                proxy.latency(20_000, which="pubsub")
                session.subscribe_transactions(list(sim.addresses[:2]))
                wait_for(lambda: any(t.name.startswith("connect-")
                                     for t in threading.enumerate()), 5, "a connect")
                wait_for(lambda: proxy.connections("pubsub") >= 1, 5, "pubsub accepted")
            finally:
                t0 = time.monotonic()
                session.shutdown()
                took = time.monotonic() - t0
            assert took < timing.graceful_close + 2.0, took


def test_many_sessions_started_and_shut_down_right_after_up(caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    with LocalSimulator(seed=31, slots=400) as sim:
        first, _ = sim.available_range()
        fds = _fds()
        with no_leaks(8.0):
            errors: list[BaseException] = []

            def one(k: int) -> None:
                try:
                    for _ in range(4):
                        s = start(sim, first, first + 30,
                                  transactions=list(sim.addresses[:2]),
                                  account_diffs=list(sim.addresses[2:3]))
                        if k % 2:
                            s.next_event(timeout=5)
                        s.shutdown()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=(k,)) for k in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
                assert not t.is_alive()
            assert errors == []
        wait_for(lambda: _fds() <= fds, 5, f"fds back ({_fds()} vs {fds})")
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


# --- application actors -----------------------------------------------------------------


class _Raising(SessionListener):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.n = 0

    def on_event(self, event: Any) -> None:
        self.n += 1
        if self.n > self.after:
            raise RuntimeError("strategy bug")
        if type(event).__name__ == "ReadyForContinue":
            self.send_continue(ContinueParams(advance_count=1))


@pytest.mark.parametrize("after", [0, 5])
def test_a_listener_that_raises_or_is_stopped_does_not_hang_the_session(after: int) -> None:
    with LocalSimulator(seed=41, slots=200) as sim:
        first, _ = sim.available_range()
        with no_leaks(5.0):
            listener = _Raising.start(after)
            session = start(sim, first, first + 30, listener=listener,
                            transactions=list(sim.addresses[:2]))
            wait_for(lambda: not listener.is_alive(), 5, "the listener to die")
            wait_for(lambda: session.status() == {} or True, 1, "status")
            t0 = time.monotonic()
            session.shutdown()
            assert time.monotonic() - t0 < 3.0


def test_a_listener_stopped_while_the_session_runs() -> None:
    with LocalSimulator(seed=42, slots=200) as sim:
        first, _ = sim.available_range()
        with no_leaks(5.0):
            listener = _Raising.start(10**9)
            session = start(sim, first, first + 40, listener=listener,
                            transactions=list(sim.addresses[:2]))
            listener.stop(timeout=2)
            t0 = time.monotonic()
            session.shutdown()
            assert time.monotonic() - t0 < 3.0


class _Stopper(SimpleInboxActor):
    def on_receive(self, message: Any) -> Any:
        if message == "stop":
            self.stop()
        return message


def test_ask_to_a_stopping_simple_inbox_actor_always_answers() -> None:
    with no_leaks(5.0):
        hung = 0
        for _ in range(200):
            ref = _Stopper.start()
            futures: list[Any] = []
            go = threading.Barrier(4)

            def asker(ref: Any = ref, futures: list[Any] = futures,
                      go: threading.Barrier = go) -> None:
                go.wait(2)
                for i in range(50):
                    futures.append(ref.ask(i, block=False))

            threads = [threading.Thread(target=asker) for _ in range(3)]
            for t in threads:
                t.start()
            go.wait(2)
            ref.tell("stop")
            for t in threads:
                t.join(5)
            for f in futures:
                try:
                    f.get(timeout=2)
                except pykka.ActorDeadError:
                    pass
                except pykka.Timeout:
                    hung += 1
        assert hung == 0


# --- minimal reproductions -------------------------------------------------------------


def test_dead_entry_count_matches_the_heap_after_concurrent_cancels() -> None:
    """Cancels from 4 threads (some entries due now, some in a minute): once every
    cancel has returned, the count of dead entries is the number of dead entries."""
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            lease = Scheduler()
            core = lease._core
            deadline = time.monotonic() + 5.0
            rounds, mismatch = 0, None
            switch = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)  # thread switches inside the short windows
            while time.monotonic() < deadline and mismatch is None:
                rounds += 1
                handles = [lease.schedule(0.0 if i % 2 else 60.0, recorder, None)
                           for i in range(4000)]
                go = threading.Barrier(4)

                def cancel(part: list[Any], go: Any = go) -> None:
                    go.wait(2)
                    for h in part:
                        h.cancel()

                threads = [threading.Thread(target=cancel, args=(handles[i::4],))
                           for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(5)
                _, dead, counted = _heap_truth(core)
                if counted != dead:
                    mismatch = (rounds, dead, counted)
            sys.setswitchinterval(switch)
            lease.stop()
        assert mismatch is None, f"round {mismatch[0]}: {mismatch[1]} dead entries in " \
            f"the heap, {mismatch[2]} counted"
    finally:
        recorder.stop()


def test_a_rejected_create_with_a_listener_raises_the_session_error_and_leaks_nothing(
) -> None:
    from actors import ManagedSessionError
    with LocalSimulator(seed=43, slots=50) as sim:
        first, last = sim.available_range()
        listener = SessionListener.start()
        try:
            with no_leaks(5.0):
                with pytest.raises(ManagedSessionError):
                    start(sim, last + 1000, last + 1010, listener=listener)
        finally:
            listener.stop()
