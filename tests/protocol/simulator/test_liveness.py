"""The simulator finds dead peers as a real server must, and stays bounded and fair.

The rules (keepalive verdicts, ownership, fencing, replay bounds) are tested in
the sans-I/O engine first; the wire tests then check that the server applies
them to real sockets, through the fault proxy where the network must fail
between the two ends.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import urllib.request

import psutil
import pytest
import websocket

from actors.cli import build_parser
from protocol import (
    KEEPALIVE_INTERVAL,
    KEEPALIVE_MISS_DEADLINE,
    Attach,
    BacktestError,
    ContinueParams,
    CreateSession,
    TransactionNotification,
    decode_pubsub,
    decode_response,
    encode_request,
)
from protocol.messages import (
    Close,
    Completed,
    Error,
    ReadyForContinue,
    SessionAttached,
    SessionCreated,
    Success,
)
from protocol.pubsub import PUBSUB_BUFFER_SLOTS
from protocol.simulator import (
    REAL_SERVER_LIVENESS,
    STATS_HISTORY,
    LocalSimulator,
    ServerLiveness,
)
from protocol.simulator.__main__ import main as simulator_main
from protocol.simulator.chain import Chain
from protocol.simulator.engine import (
    REPLAY_LOG_LIMIT,
    PeerLiveness,
    Session,
    error_frame,
    refusal_frame,
)
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import wait_for
from tests.support.wire import control, create, read_until, subscribe

SHORT = ServerLiveness(keepalive_interval=0.25, keepalive_deadline=1.0)
# "No reader holds a session longer than the keepalive deadline", strictly.
STRICT = ServerLiveness(keepalive_interval=0.25, keepalive_deadline=1.0, stall_timeout=1.0)
CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError)


pytestmark = pytest.mark.backtest_simulator(seed=9, slots=400, liveness=SHORT)


def open_session(start_slot: int = 0, span: int = 20) -> Session:
    chain = Chain(0, 400)
    first, _ = chain.available_range()
    session, error = Session.open(CreateSession(first + start_slot, first + start_slot + span),
                                  "key", chain)
    assert session is not None and error is None
    list(session.startup())
    return session


def attach_until_attached(ws: websocket.WebSocket, session_id: str, timeout: float
                          ) -> tuple[int, float]:
    """Attach again and again; (busy answers before success, time of success)."""
    busy = 0
    deadline = time.monotonic() + timeout
    while True:
        ws.send(encode_request(Attach(session_id, None)))
        _, msg = decode_response(ws.recv())
        if isinstance(msg, SessionAttached):
            return busy, time.monotonic()
        assert isinstance(msg, Error) and msg.error.kind == "sessionOwnershipBusy", msg
        busy += 1
        assert time.monotonic() < deadline, f"still busy after {timeout}s"
        time.sleep(0.02)


def read_pubsub_until_pong(ws: websocket.WebSocket) -> list[object]:
    """Every PubSub message until the pong of a ``b"barrier"`` ping (sent by the caller)."""
    out: list[object] = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"barrier":
            return out
        if opcode == websocket.ABNF.OPCODE_TEXT:
            out.append(decode_pubsub(frame.data))


# --- the rules, without sockets ---------------------------------------------------------

def test_keepalive_verdicts() -> None:
    clock = PeerLiveness(interval=1.0, deadline=3.0, last_inbound=0.0)
    assert clock.check(0.5) is None
    assert clock.check(1.0) == "ping"  # idle for the interval
    assert clock.check(1.5) is None  # pinged half an interval ago
    assert clock.check(2.0) == "ping"
    clock.inbound(2.5)  # the pong
    assert clock.check(3.0) is None  # alive: heard from 0.5 s ago
    assert clock.check(3.5) == "ping"
    clock.inbound(1.0)  # an old stamp never moves the clock back
    assert clock.check(4.0) is None
    assert clock.check(5.49) == "ping"  # silent for 2.99 s: still pinged, not yet dead
    assert clock.check(5.51) == "dead"  # nothing for more than the deadline
    assert clock.dead and clock.check(9.0) is None  # dead once, then nothing to do
    other = PeerLiveness(1.0, 3.0, 0.0)
    other.close()
    assert other.dead


def test_ownership_dead_owner_loses_live_owner_keeps() -> None:
    session = open_session()
    a, b = PeerLiveness(1, 3, 0), PeerLiveness(1, 3, 0)
    assert session.attach(a) is None and session.owner_alive
    busy = session.attach(b)
    assert busy is not None and busy.kind == "sessionOwnershipBusy" and busy.terminal is False
    assert session.owner is a  # a refused attach changes nothing
    a.check(3.5)  # the keepalive finds a dead
    assert not session.owner_alive
    assert session.attach(b) is None and session.owner is b
    refused = session.attach(a)  # a dead connection never owns again
    assert refused is not None and refused.kind == "sessionOwnershipBusy"
    assert session.release(a) is False and session.owner is b
    assert session.release(b) is True and session.owner is None


def test_fencing_a_command_without_ownership_is_refused_and_never_executed() -> None:
    session = open_session()
    a, b = PeerLiveness(1, 3, 0), PeerLiveness(1, 3, 0)
    session.attach(a)
    assert session.authorize(a) is None
    a.check(3.5)  # found dead: a stale continue from it may still be in a buffer
    session.attach(b)
    refusal = session.authorize(a)
    assert refusal == BacktestError("sessionOwnershipBusy", {
        "reason": "this connection does not own the session (ownership lost); attach again"})
    assert session.commands_refused == 1
    assert session.continues_received == 0 and session.ready  # nothing ran
    # The refusal answers that connection only: no seqId, not in the replay log.
    log_before = len(session.log)
    seq, msg = decode_response(refusal_frame(refusal))
    assert seq is None and msg == Error(refusal)
    assert len(session.log) == log_before
    assert session.authorize(b) is None  # the owner's commands go on
    session.release(b)
    assert session.authorize(b) is not None  # orphaned: nobody may act until an attach


def test_engine_buffers_exactly_the_last_100_executed_slots() -> None:
    session = open_session(span=300)
    executed: list[int] = []
    for advance in (40, 70, 50):
        for step in session.run_continue(ContinueParams(advance_count=advance)):
            slot = getattr(getattr(step, "executed", None), "slot", None)
            if slot is not None:
                executed.append(slot)
    assert len(executed) == 160
    assert [s.slot for s in session.buffer] == executed[-PUBSUB_BUFFER_SLOTS:]
    # replayFromSlot older than the buffer: everything it still holds, no error.
    assert [s.slot for s in session.buffered_since(executed[0])] == executed[-100:]
    assert [s.slot for s in session.buffered_since(executed[-1])] == executed[-1:]
    assert session.buffered_since(executed[-1] + 1) == []


def test_engine_replay_log_is_a_bounded_window() -> None:
    session = open_session()
    for _ in range(5000):  # e.g. a client hammering a finished session with continues
        error_frame(session, BacktestError("noMoreBlocks"))
    assert len(session.log) == REPLAY_LOG_LIMIT
    last = session.next_seq - 1
    window = session.replay_after(None)
    assert len(window) == REPLAY_LOG_LIMIT
    assert decode_response(window[0])[0] == last - REPLAY_LOG_LIMIT + 1
    assert session.replay_after(3) == window  # older than the window: all of it, no error
    assert [decode_response(f)[0] for f in session.replay_after(last - 2)] == [last - 1, last]


# --- (a) a half-open owner --------------------------------------------------------------

def test_half_open_owner_is_found_dead_then_a_new_attach_succeeds(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with FaultProxy("127.0.0.1", sim.port) as proxy:
        owner, sid, msgs = create(sim, first, first + 40, url=proxy.url_for(sim.url),
                                  disconnect_timeout_secs=60)
        other = control(sim)
        other.send(encode_request(Attach(sid, None)))
        _, msg = decode_response(other.recv())
        assert isinstance(msg, Error) and msg.error.kind == "sessionOwnershipBusy"
        assert proxy.half_open("control") == 1  # the owner's host vanished, without a word
        vanished = time.monotonic()
        busy, attached = attach_until_attached(other, sid, SHORT.keepalive_deadline + 2)
        assert busy >= 1  # busy while the server still believed in the old owner
        assert attached - vanished <= SHORT.keepalive_deadline + 1
        assert read_until(other, ReadyForContinue) == msgs  # the whole replay
        other.send(encode_request(ContinueParams(advance_count=2)))
        read_until(other, ReadyForContinue)
        stats = sim.session_stats(sid)
        assert stats.owner_connected and stats.continues_received == 1
        counts = sim.liveness_counts()
        assert counts["dead"] == 1 and counts["owners_lost"] == 1


# --- (b) the blackhole fault silences the server's keepalive too ---------------------------

def test_blackhole_silences_pings_both_ways_and_the_server_closes_it(sim: LocalSimulator
                                                                     ) -> None:
    first, _ = sim.available_range()
    owner, sid, _ = create(sim, first, first + 40, disconnect_timeout_secs=60)
    sim.faults.blackhole("control")
    sim.fault_counts()  # a round trip through the loop: the fault is in place
    blackholed = time.monotonic()
    owner.ping(b"are you there")  # never answered
    owner.send(encode_request(ContinueParams()))  # never read
    wait_for(lambda: not sim.session_stats(sid).owner_connected,
             SHORT.keepalive_deadline + 1, "the server to find the blackholed owner dead")
    assert time.monotonic() - blackholed >= SHORT.keepalive_deadline * 0.9
    # Nothing came back in all that time, not even a keepalive ping or a close frame:
    # the first thing the client sees is the server giving up on the TCP connection.
    owner.settimeout(SHORT.close_timeout + 2)
    with pytest.raises(CLOSED):
        owner.recv_data_frame(control_frame=True)
    assert sim.session_stats(sid).continues_received == 0
    counts = sim.liveness_counts()
    assert counts["dead"] == 1 and counts["pings"] >= 1  # pinged, into the void


# --- (c) a connection that lost ownership cannot act ------------------------------------

def test_command_after_ownership_was_lost_is_refused_never_executed() -> None:
    # A long close window, so the stale connection can still deliver a frame after
    # the server found it dead and is waiting for its close handshake.
    liveness = ServerLiveness(keepalive_interval=0.25, keepalive_deadline=1.0,
                              close_timeout=3.0)
    with LocalSimulator(seed=9, slots=400, liveness=liveness) as sim:
        first, _ = sim.available_range()
        stale, sid, msgs = create(sim, first, first + 40, disconnect_timeout_secs=60)
        # The client stops reading (a GC pause, a frozen VM): it answers no ping.
        wait_for(lambda: not sim.session_stats(sid).owner_connected, 3, "ownership lost")
        new_owner = control(sim)
        new_owner.send(encode_request(Attach(sid, msgs[-1][0])))
        assert isinstance(decode_response(new_owner.recv())[1], SessionAttached)
        stale.send(encode_request(ContinueParams(advance_count=5)))  # wakes up, acts
        stale.send(encode_request(Close()))
        wait_for(lambda: sim.liveness_counts()["commands_refused"] == 2, 2,
                 "both stale commands refused")
        stats = sim.session_stats(sid)
        assert stats.continues_received == 0 and stats.commands_refused == 2
        assert sid in sim.session_ids()  # the stale Close did not end the session
        # The stale client is told why it lost the connection: the close frame
        # (an error frame cannot follow it on the wire; RFC 6455 5.5.1).
        opcode, frame = stale.recv_data_frame(control_frame=True)
        while opcode == websocket.ABNF.OPCODE_PING:  # sent before it was found dead
            opcode, frame = stale.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1011
        assert frame.data[2:] == b"keepalive deadline missed"
        # The new owner drives the session as if nothing had happened.
        new_owner.send(encode_request(ContinueParams(advance_count=2)))
        read_until(new_owner, ReadyForContinue)
        assert sim.session_stats(sid).continues_received == 1


def test_attaching_elsewhere_releases_the_previous_session(sim: LocalSimulator) -> None:
    """One connection, one session: moving to another session frees the first at once."""
    first, _ = sim.available_range()
    a, sid_a, msgs_a = create(sim, first, first + 40, disconnect_timeout_secs=60)
    b, sid_b, _ = create(sim, first, first + 40, disconnect_timeout_secs=60)
    b.close()
    wait_for(lambda: not sim.session_stats(sid_b).owner_connected, 2, "b orphaned")
    a.send(encode_request(Attach(sid_b, None)))  # a moves to session b...
    assert isinstance(decode_response(a.recv())[1], SessionAttached)
    read_until(a, ReadyForContinue)
    assert not sim.session_stats(sid_a).owner_connected  # ...and releases session a
    c = control(sim)
    c.send(encode_request(Attach(sid_a, msgs_a[-1][0])))  # no busy answer to wait out
    assert isinstance(decode_response(c.recv())[1], SessionAttached)
    c.send(encode_request(ContinueParams()))
    read_until(c, ReadyForContinue)
    a.send(encode_request(ContinueParams()))  # a's commands now drive session b
    read_until(a, ReadyForContinue)
    assert sim.session_stats(sid_a).continues_received == 1
    assert sim.session_stats(sid_b).continues_received == 1


# --- (d) memory bounds ---------------------------------------------------------------------

def test_finished_sessions_are_freed_and_history_is_bounded() -> None:
    process = psutil.Process()
    with LocalSimulator(seed=9, slots=400) as sim:
        first, _ = sim.available_range()
        ws = control(sim)
        rss_after_100 = 0
        created: list[str] = []
        for i in range(1500):
            ws.send(encode_request(CreateSession(first, first + 20)))
            msgs = read_until(ws, ReadyForContinue)
            created.append(next(m.session_id for _, m in msgs if isinstance(m, SessionCreated)))
            ws.send(encode_request(ContinueParams(advance_count=20)))
            read_until(ws, Completed)
            ws.send(encode_request(Close()))
            assert decode_response(ws.recv())[1] == Success()
            if i == 99:
                gc.collect()
                rss_after_100 = process.memory_info().rss
        gc.collect()
        growth = process.memory_info().rss - rss_after_100
        assert growth < 10 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 1,400 sessions"
        assert sim.session_ids() == []
        with urllib.request.urlopen(f"http://127.0.0.1:{sim.port}/stats", timeout=5) as r:
            history = json.load(r)
        assert len(history) == STATS_HISTORY
        assert list(history) == created[-STATS_HISTORY:]  # the most recent, in order
        assert history[created[-1]]["completed"] and history[created[-1]]["blocks_executed"]
        with pytest.raises(KeyError):
            sim.session_stats(created[0])


def test_invalid_requests_leave_the_replay_log_and_memory_bounded() -> None:
    process = psutil.Process()
    with LocalSimulator(seed=9, slots=400) as sim:
        first, _ = sim.available_range()
        ws, sid, _ = create(sim, first, first + 20)
        log_before = sim.session_stats(sid).replay_log_entries
        bad = '{"method": "continue", "params": {"advanceCount": "' + "x" * 10_000 + '"}}'
        count = 20_000
        gc.collect()
        rss_before = process.memory_info().rss

        def flood() -> None:
            for _ in range(count):
                ws.send(bad)

        sender = threading.Thread(target=flood, name="flood")
        sender.start()
        for _ in range(count):
            seq, msg = decode_response(ws.recv())
            assert seq is None and isinstance(msg, Error)  # answered, not sequenced
        sender.join()
        gc.collect()
        growth = process.memory_info().rss - rss_before
        assert msg.error.kind == "invalidRequest"
        assert sim.session_stats(sid).replay_log_entries == log_before
        assert growth < 8 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
        ws.send(encode_request(ContinueParams()))  # the session is unharmed
        read_until(ws, ReadyForContinue)


# --- (e) a reader that stops cannot hold the owner's session ------------------------------

@pytest.mark.parametrize("subscriber", ["silent", "pinging"])
def test_subscriber_that_stops_reading_releases_the_session_within_the_deadline(
        subscriber: str) -> None:
    """A raw subscriber that never reads: found dead (silent) or stalled (it keeps pinging).

    "Released" is the server's decision (the TCP close follows within
    ``close_timeout``). A silent reader is held to the keepalive deadline from the
    moment it stopped; a pinging one to ``stall_timeout`` from the moment its
    buffers were full and the session started to wait for it.
    """
    with LocalSimulator(seed=9, slots=400, txs_per_slot=200, liveness=STRICT) as sim:
        first, _ = sim.available_range()
        owner, sid, _ = create(sim, first, first + 300)
        # A tiny receive buffer: the server's side fills after a few MB.
        stuck, _ = subscribe(sim, sid, "transactions", list(sim.addresses),
                             sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        stopped_reading = time.monotonic()
        stop = threading.Event()

        def keep_pinging() -> None:  # the owner stays alive all along; the stuck
            talking = subscriber == "pinging"  # reader too if it is the pinging kind
            while not stop.wait(0.1):
                owner.ping(b"still here")
                if talking:
                    try:
                        stuck.ping(b"still here")  # it talks but never reads
                    except (websocket.WebSocketException, OSError):
                        talking = False  # the server gave up on it: the point

        pinger = threading.Thread(target=keep_pinging, name="pinger")
        pinger.start()
        slots: list[object] = []
        owner_reader = threading.Thread(  # the owner reads all along (and answers pings)
            target=lambda: slots.extend(read_until(owner, ReadyForContinue, Completed)),
            name="owner")
        sent: list[tuple[float, int]] = []

        def session_waits() -> float | None:
            """When the session stopped sending (its stuck reader's buffers are full)."""
            now = (time.monotonic(), sim.session_stats(sid).notifications_sent)
            if sent and sent[-1][1] != now[1]:
                sent.clear()
            sent.append(now)
            return sent[0][0] if now[0] - sent[0][0] >= 0.3 else None

        def decided() -> bool:
            counts = sim.liveness_counts()
            return counts["dead"] + counts["stalled"] >= 1

        try:
            owner.send(encode_request(ContinueParams(advance_count=100)))
            owner_reader.start()
            if subscriber == "pinging":
                held_from = wait_for(session_waits, 10, "the session to wait for the reader")
            else:
                held_from = stopped_reading
            wait_for(decided, STRICT.keepalive_deadline + 3, "the server to give up on it")
            released = time.monotonic() - held_from
            wait_for(lambda: sim.session_stats(sid).subscribers == 0,
                     STRICT.close_timeout + 2, "the stuck reader's connection closed")
            owner_reader.join(30)
        finally:
            stop.set()
            pinger.join()
        assert released <= STRICT.keepalive_deadline + 1, f"held {released:.2f}s"
        stats = sim.session_stats(sid)
        assert stats.blocks_executed == 100 and len(slots) > 100  # the session ran on
        counts = sim.liveness_counts()
        if subscriber == "pinging":
            assert counts["stalled"] == 1 and counts["dead"] == 0
        else:
            assert counts["stalled"] + counts["dead"] == 1
        assert counts["owners_lost"] == 0  # the owner was never in doubt


def test_paused_reader_that_stays_alive_holds_the_session_and_loses_nothing() -> None:
    """An application pause longer than the keepalive deadline, shorter than stall_timeout."""
    liveness = ServerLiveness(keepalive_interval=0.25, keepalive_deadline=1.0,
                              stall_timeout=5.0)
    with LocalSimulator(seed=9, slots=400, txs_per_slot=200, liveness=liveness) as sim:
        first, _ = sim.available_range()
        owner, sid, msgs = create(sim, first, first + 300)
        addrs = list(sim.addresses)
        reader, early = subscribe(sim, sid, "transactions", addrs, skip_utf8_validation=True,
                                  sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        # The client pings on its own schedule, whatever its readers do (as the actor
        # client does): the server's pings wait behind megabytes of queued frames, so
        # answering them is no proof of life while a deep queue is being caught up.
        stop = threading.Event()

        def keep_pinging() -> None:
            while not stop.wait(0.1):
                reader.ping(b"busy, not dead")
                owner.ping(b"busy, not dead")

        pinger = threading.Thread(target=keep_pinging, name="pinger")
        pinger.start()
        try:
            owner.send(encode_request(ContinueParams(advance_count=60)))
            # The application is busy: nothing is read for twice the keepalive deadline.
            stop.wait(liveness.keepalive_deadline * 2)
            held = sim.session_stats(sid)
            assert held.subscribers == 1 and held.blocks_executed < 60  # waiting for it
            counts = sim.liveness_counts()
            assert counts["dead"] == 0 and counts["stalled"] == 0
            # The application reads again: both connections, each in its own thread.
            notes: list[object] = list(early)
            failures: list[BaseException] = []

            def read_all() -> None:
                try:
                    notes.extend(read_pubsub_until_pong(reader))
                except BaseException as exc:  # reported below, with the server's view
                    failures.append(exc)

            drained = threading.Thread(target=read_all, name="reader")
            drained.start()
            slots = read_until(owner, ReadyForContinue)
            reader.ping(b"barrier")  # answered after everything queued before it
            drained.join(10)
        finally:
            stop.set()
            pinger.join()
        assert not drained.is_alive()
        assert not failures, (failures, sim.liveness_counts(), sim.session_stats(sid))
        executed = [m.slot for _, m in slots if hasattr(m, "slot")]
        expected = sim.expected(first, executed[-1], transactions=addrs)
        signatures = [n.signature for n in notes if isinstance(n, TransactionNotification)]
        assert set(signatures) == set(expected.signatures)
        assert list(dict.fromkeys(signatures)) == expected.signatures  # in chain order
        assert sim.session_stats(sid).blocks_executed == 60
        counts = sim.liveness_counts()
        assert counts["dead"] == 0 and counts["stalled"] == 0


# --- the knobs ----------------------------------------------------------------------------

def test_liveness_knobs_on_both_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["simulator", "--keepalive-interval", "0.5",
                                      "--keepalive-deadline", "2", "--stall-timeout", "9"])
    assert (args.keepalive_interval, args.keepalive_deadline, args.stall_timeout) == (0.5, 2, 9)
    with pytest.raises(SystemExit) as info:  # a deadline must exceed the interval
        simulator_main(["--port", "0", "--keepalive-interval", "2",
                        "--keepalive-deadline", "1"])
    assert info.value.code == 2
    assert "must exceed keepalive_interval" in capsys.readouterr().err
    with pytest.raises(ValueError):
        ServerLiveness(keepalive_interval=0)
    defaults = ServerLiveness()  # what LocalSimulator uses unless told otherwise
    assert (defaults.keepalive_interval, defaults.keepalive_deadline,
            defaults.stall_timeout) == (1.0, 3.0, 30.0)
    assert (REAL_SERVER_LIVENESS.keepalive_interval,
            REAL_SERVER_LIVENESS.keepalive_deadline) == (KEEPALIVE_INTERVAL,
                                                         KEEPALIVE_MISS_DEADLINE)
