"""What a server may send that it should not: malformed, truncated, oversized or late
frames never kill a session silently; each is counted and the link recovers."""

from __future__ import annotations

import socket
import time

import pytest

from actors import ManagedBacktestSession, ManagedSessionError, Reconnecting
from protocol import (
    CreateSession,
    ReconnectPolicy,
    Timing,
)
from protocol.simulator import LocalSimulator
from tests.support.harness import check_exact, drive, no_leaks, start

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


@pytest.mark.backtest_simulator(seed=17, slots=300)
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


@pytest.mark.backtest_simulator(seed=17, slots=300)
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


@pytest.mark.backtest_simulator(seed=17, slots=300)
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
