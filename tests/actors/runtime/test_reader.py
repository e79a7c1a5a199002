"""The shared reader thread: one per process, credits exact, a paused socket not read."""

from __future__ import annotations

import threading

import pytest
from websockets.sync.server import ServerConnection

from actors.events import Up
from actors.runtime.connection import (
    ConnectFailed,
    Connection,
    Disconnected,
    ReaderPaused,
    ReaderResumed,
)
from actors.runtime.reader import SharedReader
from protocol.simulator import LocalSimulator
from tests.support.harness import (
    FAST,
    Recorder,
    disconnects,
    no_leaks,
    open_connection,
    received_items,
    start,
    until_disconnected,
    wait_for,
)
from tests.support.scripted import hold, scripted_server

FRAMES = 200


def _flood(ws: ServerConnection) -> None:
    for n in range(FRAMES):
        ws.send(f"frame-{n}")
    hold(ws)


def test_credits_are_exact_and_a_paused_connection_is_resumed_by_grants() -> None:
    with scripted_server(_flood) as url, no_leaks(3.0):
        owner = Recorder.start()
        try:
            conn = open_connection(url, owner, window=7)
            wait_for(lambda: ReaderPaused() in owner.ask("get"), 5, "the reader to pause")
            assert received_items(owner.ask("get")) == [f"frame-{n}" for n in range(7)]
            conn.grant(5)
            wait_for(lambda: owner.ask("get").count(ReaderPaused()) == 2, 5, "a second pause")
            seen = owner.ask("get")
            assert seen.count(ReaderResumed()) == 1
            assert received_items(seen) == [f"frame-{n}" for n in range(12)]
            conn.grant(FRAMES)
            wait_for(lambda: len(received_items(owner.ask("get"))) == FRAMES, 5, "every frame")
            assert received_items(owner.ask("get")) == [f"frame-{n}" for n in range(FRAMES)]
            conn.abort()
            assert conn.join(2.0)
            assert not disconnects(owner.ask("get"))
        finally:
            owner.stop()


def test_connections_share_one_reader_thread_and_the_last_one_ends_it() -> None:
    with scripted_server(_flood) as url, no_leaks(3.0):
        owners = [Recorder.start() for _ in range(6)]
        try:
            conns = [open_connection(url, owner, window=FRAMES) for owner in owners]
            wait_for(lambda: all(len(received_items(o.ask("get"))) == FRAMES for o in owners), 5,
                     "every connection's frames")
            # One reader thread for six connections; the connect threads are gone.
            wait_for(lambda: not any(t.name.startswith("connect-")
                                     for t in threading.enumerate()), 5,
                     "the connect threads to end")
            assert [t.name for t in threading.enumerate()].count("backtest-reader") == 1
            assert SharedReader.running() == 1
            for owner in owners:
                assert received_items(owner.ask("get")) == [f"frame-{n}" for n in range(FRAMES)]
            for conn in conns:
                conn.abort()
            assert all(conn.join(2.0) for conn in conns)
            assert SharedReader.running() == 0
        finally:
            for owner in owners:
                owner.stop()


def test_a_peer_that_closes_is_reported_once_after_its_frames() -> None:
    def script(ws: ServerConnection) -> None:
        ws.send("last words")
        ws.close(1001)

    with scripted_server(script) as url, no_leaks(3.0):
        owner = Recorder.start()
        try:
            conn = open_connection(url, owner, window=10)
            seen = until_disconnected(owner)
            assert received_items(seen) == ["last words"]
            assert disconnects(seen) == [Disconnected("closed by server (code 1001)")]
            conn.abort()
            assert conn.join(2.0)
        finally:
            owner.stop()


def test_a_refused_connect_is_reported_and_leaves_nothing() -> None:
    with scripted_server(hold) as url:
        pass  # the port is free again: nothing listens there
    with no_leaks(3.0):
        owner = Recorder.start()
        try:
            conn = Connection(url, owner=owner, decode=bytes.decode, window=1,
                              connect_timeout=2.0)
            conn.start()
            wait_for(lambda: any(isinstance(m, ConnectFailed) for m in owner.ask("get")), 5,
                     "the refusal")
            assert conn.join(2.0)
            assert SharedReader.running() == 0
        finally:
            owner.stop()


def test_sessions_run_on_four_actor_threads_each_plus_two_shared() -> None:
    with LocalSimulator(seed=9, slots=100) as sim, no_leaks(FAST.graceful_close + 2):
        first, _ = sim.available_range()
        before = threading.active_count()
        sessions = [start(sim, first, first + 20) for _ in range(5)]
        try:
            for session in sessions:
                session.subscribe_transactions(sim.addresses[:2])
                session.subscribe_account_diffs(sim.addresses[:2])
            wait_for(lambda: all(all(isinstance(s, Up) for s in session.status().values())
                                 and len(session.status()) == 3 for session in sessions),
                     10, "every link up")
            wait_for(lambda: not any(t.name.startswith("connect-")
                                     for t in threading.enumerate()), 5,
                     "the connect threads to end")
            # Supervisor, control, two subscriptions per session; one reader and one
            # timer thread for the process.
            names = [t.name for t in threading.enumerate()]
            assert threading.active_count() - before == 4 * len(sessions) + 2, names
        finally:
            for session in sessions:
                session.shutdown()


def _good_frames_then_a_corrupt_one(ws: ServerConnection) -> None:
    # Written as raw bytes in one send, so the client reads them in one chunk: the
    # corrupt frame (RSV1 set) waits in its buffer behind frames it has no credit for.
    good = b"".join(bytes([0x81, len(p)]) + p for p in (b"one", b"two", b"three"))
    ws.socket.sendall(good + bytes([0x81 | 0x40, 3]) + b"bad")
    hold(ws)


def test_a_corrupt_frame_behind_the_credit_limit_ends_the_connection_naming_it(
        caplog: pytest.LogCaptureFixture) -> None:
    """The reader stops at its credits with a bad frame next in its buffer: the bad
    header is found when the reader looks ahead, and the connection ends with the
    framing error, as for any other bad frame (not as a crash of the reader)."""
    with scripted_server(_good_frames_then_a_corrupt_one) as url, no_leaks(3.0):
        owner = Recorder.start()
        try:
            conn = open_connection(url, owner, window=3)
            seen = until_disconnected(owner)
            assert received_items(seen) == ["one", "two", "three"]
            assert disconnects(seen) == [Disconnected(
                "FramingError: reserved bits set (0x40) with no extension negotiated")]
            assert conn.join(2.0)
        finally:
            owner.stop()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
