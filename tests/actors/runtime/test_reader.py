"""The shared reader thread: one per process, credits exact, a paused socket not read."""

from __future__ import annotations

import os
import resource
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pykka
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
from protocol.frames import OP_CONTINUATION, OP_PING, OP_TEXT
from protocol.simulator import LocalSimulator
from tests.support.harness import (
    FAST,
    Recorder,
    check_exact,
    disconnects,
    drive,
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


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """A server frame (unmasked); ``length`` overrides the length in the header."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if size < 126:
        head = bytes([first, size])
    elif size < 65536:
        head = bytes([first, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + size.to_bytes(8, "big")
    return head + payload


@contextmanager
def client(url: str, *, max_frame_size: int) -> Iterator[pykka.ActorRef[Any]]:
    """A real ``Connection`` with a large window, telling the yielded recorder."""
    owner = Recorder.start()
    conn = open_connection(url, owner, window=100, max_frame_size=max_frame_size)
    try:
        yield owner
    finally:
        conn.abort()
        conn.join(3.0)
        owner.stop()


def test_a_fragmented_message_over_the_limit_is_refused_from_the_continuation_header(
        ) -> None:
    """``FrameTooLarge`` promises "a frame, or a message's fragments together, above
    the reader's size limit ... raised from the frame's header, before its payload
    is held in memory". A 600-byte first fragment and a continuation whose header
    says 600 more (limit 1000) is over the limit from that header, but the reader
    only adds the size up after the whole payload has arrived: it waits (and on a
    real limit of 8 MiB would buffer up to twice that) instead of failing the
    connection. Here the payload never comes and the connection is never failed."""
    done = threading.Event()
    wire = frame(OP_TEXT, b"x" * 600, fin=False) + frame(OP_CONTINUATION, b"", length=600)

    def script(ws: ServerConnection) -> None:
        ws.socket.sendall(wire)  # raw bytes, past the server's own framing
        done.wait(20)

    with no_leaks(5.0), scripted_server(script) as url, \
            client(url, max_frame_size=1000) as owner:
        try:
            seen = until_disconnected(owner, 3)
            assert [d.reason.split(":")[0] for d in disconnects(seen)] == ["FrameTooLarge"]
        finally:
            done.set()


def test_endless_empty_continuation_frames_do_not_grow_memory_without_bound() -> None:
    """Empty continuation frames add 0 bytes to a message's size, so the limit
    never trips, yet the reader appends each (an 8-byte list slot per 2 bytes on
    the wire) to the open message's fragment list: a server can grow the
    client's memory without bound inside one never-finished message. The
    reader's own contract is "memory is the unparsed bytes plus one message"
    (here a 1-byte message, limit 1024). 400,000 empty fragments (800 KB on
    the wire) must not leave the client holding megabytes."""
    done, go = threading.Event(), threading.Event()
    count = 400_000
    wire = (frame(OP_TEXT, b"x", fin=False) + frame(OP_CONTINUATION, b"", fin=False) * count
            + frame(OP_PING, b"mark"))

    def script(ws: ServerConnection) -> None:
        if go.wait(20):  # once the test has its baseline
            ws.socket.sendall(wire)
        done.wait(20)

    tracemalloc.start()
    try:
        with no_leaks(5.0), scripted_server(script) as url, \
                client(url, max_frame_size=1024) as owner:
            try:
                base = tracemalloc.get_traced_memory()[0]
                go.set()
                # The ping after the fragments is answered: every byte before it was parsed.
                wait_for(lambda: any(type(i).__name__ == "Pong"
                                     for i in received_items(owner.ask("get")))
                         or disconnects(owner.ask("get")), 15, "the ping after the fragments")
                grown = tracemalloc.get_traced_memory()[0] - base
                if not disconnects(owner.ask("get")):  # refusing the message is an answer as well
                    assert grown < 1 << 20, f"{grown} bytes held for a 1-byte message"
            finally:
                go.set()
                done.set()
    finally:
        tracemalloc.stop()


@pytest.mark.backtest_simulator(seed=23, slots=300)
def test_a_process_holding_1100_fds_runs_a_session_to_completion(sim: LocalSimulator) -> None:
    """``select()`` refused fds >= 1024; the reader's readiness check must not."""
    needed = 1300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        probe = socket.socket()
        assert probe.fileno() > 1024  # every socket from here on is out of select()'s range
        probe.close()
        first, _ = sim.available_range()
        end = first + 60
        tx, diffs = list(sim.addresses[:3]), list(sim.addresses[1:4])
        session = start(sim, first, end)
        try:
            session.subscribe_transactions(tx)
            session.subscribe_account_diffs(diffs)
            events = drive(session)
            stats = session.stats()
        finally:
            session.shutdown()
    finally:
        for fd in held:
            os.close(fd)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    check_exact(events, sim.expected(first, end, transactions=tx, account_diffs=diffs))
    assert stats["reconnects"] == {"control": 0, "transactions": 0, "account_diffs": 0}
