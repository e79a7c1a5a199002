"""ManagedBacktestSession against the local simulator over real sockets."""

from __future__ import annotations

import ast
import inspect
import logging
import math
import random
import time

import attrs
import pykka
import pytest

import actors
from actors import (
    Closed,
    Completed,
    ConnectionChanged,
    ContinueLost,
    Error,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    Reconnecting,
    SendContinue,
    Slot,
    Status,
    SubscribeStream,
    Transaction,
    UnsubscribeStream,
    Up,
)
from actors.frontdoors.consumer import MIN_MAX_QUEUE
from protocol import BacktestError, ContinueParams, CreateSession, ReconnectPolicy, Timing
from protocol.simulator import LocalSimulator
from tests.support import ROOT
from tests.support.harness import (
    FAST,
    QUICK_RETRY,
    check_exact,
    connection_changes,
    drive,
    no_leaks,
    start,
    wait_for,
)

pytestmark = pytest.mark.backtest_simulator(seed=11, slots=700)


def test_500_slots_both_subscriptions_exact(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 500
    tx_addrs, diff_addrs = list(sim.addresses[:3]), list(sim.addresses[1:4])
    with no_leaks(FAST.graceful_close + 1):
        session = start(sim, first, end)
        session.subscribe_transactions(tx_addrs)
        session.subscribe_account_diffs(diff_addrs)
        events = drive(session)
        stats = session.stats()
        session.shutdown()
    expected = sim.expected(first, end, transactions=tx_addrs, account_diffs=diff_addrs)
    check_exact(events, expected)
    # With no faults the stream order is the chain's order, across addresses too.
    assert [e.signature for e in events if hasattr(e, "signature") and not hasattr(
        e, "account")] == expected.signatures
    assert len(expected.slots) > 400 and len(expected.signatures) > 1000
    assert stats["continues_written"] == len(expected.slots) - 1
    assert stats["reconnects"] == {"control": 0, "transactions": 0, "account_diffs": 0}


def test_drops_of_every_connection_lose_and_duplicate_nothing(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 500
    tx_addrs, diff_addrs = list(sim.addresses[:3]), list(sim.addresses[2:5])
    expected = sim.expected(first, end, transactions=tx_addrs, account_diffs=diff_addrs)
    rng = random.Random(1234)
    drop_slots = sorted(rng.sample(expected.slots[5:-5], 15))
    targets = ["control", "transactions", "account_diffs"] * 5
    rng.shuffle(targets)
    session = start(sim, first, end)
    try:
        session.subscribe_transactions(tx_addrs)
        session.subscribe_account_diffs(diff_addrs)
        sid = session.session_info.session_id
        for slot, target in zip(drop_slots, targets, strict=True):
            sim.faults.drop(target, at_slot=slot, session_id=sid)  # type: ignore[arg-type]
        events = drive(session)
        stats = session.stats()
        server = sim.session_stats(sid)
    finally:
        session.shutdown()
    check_exact(events, expected)
    assert sim.fault_counts()["drop"] == 15
    assert server.continues_received == stats["continues_written"] == len(expected.slots) - 1
    assert server.blocks_executed == len(expected.slots) - 1
    assert stats["reconnects"] == {"control": 5, "transactions": 5, "account_diffs": 5}
    for name in ("control", "transactions", "account_diffs"):
        changes = connection_changes(events, name)
        assert changes.count("Reconnecting") == 5
        # every Reconnecting is followed by Up before the next Reconnecting
        pairs = [s for s in changes if s in ("Reconnecting", "Up")]
        assert "Reconnecting,Reconnecting" not in ",".join(pairs)
        assert pairs[-1] == "Up" or changes[-1] == "Closed"


def test_blackhole_is_detected_within_deadline_plus_interval(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    session = start(sim, first, first + 60)
    try:
        session.subscribe_transactions(sim.addresses[:2])
        events: list[object] = []
        lost_at: list[float] = []
        blackholed_at: list[float] = []

        def watch(event: object) -> None:
            if (isinstance(event, ConnectionChanged) and event.name == "transactions"
                    and isinstance(event.status, Reconnecting) and not lost_at):
                lost_at.append(time.monotonic())
            if isinstance(event, Slot) and event.slot == sim.expected(first, first + 60
                                                                      ).slots[10]:
                sim.faults.blackhole("transactions")
                sim.fault_counts()  # applied once this returns
                blackholed_at.append(time.monotonic())

        events = drive(session, on_event=watch)
    finally:
        session.shutdown()
    assert lost_at and blackholed_at
    detection = lost_at[0] - blackholed_at[0]
    assert detection <= FAST.keepalive_deadline + FAST.keepalive_interval + 0.1
    reason = next(e.status.reason for e in events if isinstance(e, ConnectionChanged)
                  and isinstance(e.status, Reconnecting))
    assert "keepalive deadline" in reason
    check_exact(events, sim.expected(first, first + 60, transactions=sim.addresses[:2]))


def test_refused_connects_follow_the_policy_delays(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    policy = ReconnectPolicy(initial=0.04, multiplier=2.0, max_delay=1.0, jitter=0.2,
                             max_attempts=10, rng=random.Random(99))
    reference = ReconnectPolicy(initial=0.04, multiplier=2.0, max_delay=1.0, jitter=0.2,
                                rng=random.Random(99))
    session = start(sim, first, first + 20, policy=policy)
    try:
        wait_ready(session)
        sim.faults.refuse(0.5)
        dropped_at = time.monotonic()
        sim.faults.drop("control")
        seen: list[tuple[float, ConnectionChanged]] = []
        while True:
            event = session.next_event(timeout=5)
            if isinstance(event, ConnectionChanged) and event.name == "control":
                seen.append((time.monotonic(), event))
                if isinstance(event.status, Up):
                    break
    finally:
        session.shutdown()
    retries = [(t, e.status) for t, e in seen if isinstance(e.status, Reconnecting)]
    assert len(retries) >= 3  # 0.04 + 0.08 + 0.16 < 0.5: at least three refused
    assert [s.delay for _, s in retries] == [reference.delay(n) for n in
                                             range(1, len(retries) + 1)]
    assert [s.attempt for _, s in retries] == list(range(1, len(retries) + 1))
    # The attempts waited their delays: Up came after all of them. (Events are
    # handed over in batches, so the gaps between two of them as the application
    # sees them say nothing; the drop-to-Up span is a sound lower bound.)
    up_at = seen[-1][0]
    assert up_at - dropped_at >= sum(s.delay for _, s in retries)
    assert all("Refused" in s.reason or "refused" in s.reason for _, s in retries[1:])


def test_exhausted_budget_fails_with_control_failed(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    policy = ReconnectPolicy(initial=0.01, max_delay=0.02, max_attempts=3, rng=random.Random(1))
    with no_leaks(FAST.graceful_close + 1):
        session = start(sim, first, first + 20, policy=policy)
        sim.faults.refuse(10)
        sim.faults.drop("control")
        with pytest.raises(ManagedSessionError) as info:
            while True:
                session.next_event(timeout=5)
        assert info.value.kind == "control_failed"
        assert "budget spent after 3 restarts" in str(info.value)
        with pytest.raises(ManagedSessionError):  # it stays failed
            session.send_continue(ContinueParams())
        assert isinstance(session.status()["control"], type(session.status()["control"]))
        session.shutdown()


def test_wrong_api_key_fails_start_after_one_attempt(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    started = time.monotonic()
    with no_leaks(FAST.graceful_close + 1):
        with pytest.raises(ManagedSessionError) as info:
            ManagedBacktestSession.start(sim.url, "not-the-key", CreateSession(first, first + 5),
                                         timing=FAST, policy=QUICK_RETRY)
    assert info.value.kind == "create"
    assert "401" in str(info.value) and "not-the-key" not in str(info.value)
    assert time.monotonic() - started < 1.0
    assert sim.upgrade_requests() == {"control": 1}


def test_bad_arguments_are_rejected_before_connecting(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with pytest.raises(ValueError, match="^api_key"):
        ManagedBacktestSession.start(sim.url, "", CreateSession(first, first + 5))
    with pytest.raises(ValueError, match="^url"):
        ManagedBacktestSession.start("http://x", "k", CreateSession(first, first + 5))
    with pytest.raises(ValueError, match="^max_queue"):
        start(sim, first, first + 5, max_queue=0)
    # Too small to start (each link's window under 4 frames): refused, not a session
    # that fails its creation with "no handshake answer".
    with pytest.raises(ValueError, match=f"^max_queue: expected an integer >= {MIN_MAX_QUEUE}"):
        start(sim, first, first + 5, max_queue=MIN_MAX_QUEUE - 1)
    assert sim.upgrade_requests() == {}
    session = start(sim, first, first + 5)
    try:
        with pytest.raises(ValueError, match=r"^addresses\[1\]"):
            session.subscribe_transactions([sim.addresses[0], ""])
        with pytest.raises(ValueError, match=r"^addresses\[0\]"):
            session.subscribe_transactions(["a"])  # not a 32-byte base58 public key
        with pytest.raises(TypeError, match="^addresses"):
            session.subscribe_transactions("abc")
        with pytest.raises(TypeError, match="^params"):
            session.send_continue({"advance_count": 1})  # type: ignore[arg-type]
    finally:
        session.shutdown()


def test_the_smallest_queue_accepted_runs_a_session_exactly(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    addresses = list(sim.addresses[:2])
    expected = sim.expected(first, first + 30, transactions=addresses)
    session = start(sim, first, first + 30, max_queue=MIN_MAX_QUEUE)
    try:
        session.subscribe_transactions(addresses)
        events = drive(session)
    finally:
        session.shutdown()
    signatures = [e.signature for e in events if isinstance(e, Transaction)]
    assert sorted(signatures) == sorted(expected.signatures)
    assert len(signatures) == len(set(signatures))


def test_malformed_frame_is_logged_counted_and_survived(sim: LocalSimulator,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    first, _ = sim.available_range()
    end = first + 30
    caplog.set_level(logging.INFO, logger="backtest_actors")
    session = start(sim, first, end)
    try:
        session.subscribe_transactions(sim.addresses[:2])
        sid = session.session_info.session_id
        slots = sim.expected(first, end).slots
        sim.faults.malformed("control", at_slot=slots[5], frame='{"method": "status", "par')
        sim.faults.malformed("transactions", at_slot=slots[8], frame=b"\xff\xfe not utf-8")
        sim.faults.malformed("control", at_slot=slots[10],
                             frame='{"method":"error","params":{"internal":{"error":"boom"}}}')
        events = drive(session)
        stats = session.stats()
    finally:
        session.shutdown()
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))
    assert stats["malformed_frames"] == 2
    warnings = [r for r in caplog.records if "malformed frame dropped" in r.getMessage()]
    assert len(warnings) == 2
    assert "'{\"method\": \"status\", \"par'" in warnings[0].getMessage()
    assert "not UTF-8" in warnings[1].getMessage()
    assert [e for e in events if isinstance(e, Error)] == [
        Error(BacktestError("internal", {"error": "boom"}))]
    records = [r for r in caplog.records if r.name.startswith("backtest_actors")]
    assert records and all(getattr(r, "session_id", None) in (sid, "(creating)")
                           for r in records)
    assert all(sid in r.getMessage() or "(creating)" in r.getMessage() for r in records)


def test_continue_outstanding_is_rejected(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    sim.faults.delay_handshake(0.5, "transactions")
    session = start(sim, first, first + 20)
    try:
        session.subscribe_transactions(sim.addresses[:1])
        assert isinstance(wait_ready(session), ReadyForContinue)
        # Held until the subscription is Up (its ack is delayed 0.5 s), so the
        # second one always meets it outstanding.
        session.supervisor.tell(SendContinue(ContinueParams()))
        with pytest.raises(ManagedSessionError) as info:
            session.send_continue()
        assert info.value.kind == "continue_outstanding"
        wait_for(lambda: sim.session_stats(session.session_info.session_id)
                 .continues_received == 1, 5, "the held continue to reach the server")
    finally:
        session.shutdown()


def wait_ready(session: ManagedBacktestSession) -> object:
    while not isinstance(event := session.next_event(timeout=5), ReadyForContinue):
        pass
    return event


def test_next_event_timeout_loses_nothing(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    session = start(sim, first, first + 10)
    try:
        wait_ready(session)
        with pytest.raises(TimeoutError):
            session.next_event(timeout=0.05)
        session.send_continue()
        assert isinstance(session.next_event(timeout=5), Status)
    finally:
        session.shutdown()


@pytest.mark.parametrize("state", ["mid_handshake", "reconnecting", "blackholed",
                                   "completed", "failed"])
def test_shutdown_from_any_state_leaves_nothing(sim: LocalSimulator, state: str) -> None:
    first, _ = sim.available_range()
    timing = Timing(connect=2.0, handshake=5.0, keepalive_interval=0.05,
                    keepalive_deadline=0.25, graceful_close=0.5)
    with no_leaks(timing.graceful_close + 1):
        session = start(sim, first, first + 10, timing=timing,
                        policy=ReconnectPolicy(initial=5.0 if state == "reconnecting" else 0.01,
                                               max_attempts=2, jitter=0))
        if state == "mid_handshake":
            sim.faults.delay_handshake(3.0, "transactions")
            session.subscribe_transactions(sim.addresses[:1])
            wait_for(lambda: sim.session_stats(session.session_info.session_id).subscribers,
                     5, "the subscription connection")
        elif state == "reconnecting":
            sim.faults.drop("control")
            wait_for(lambda: isinstance(session.status()["control"], Reconnecting), 5,
                     "reconnecting")
        elif state == "blackholed":
            sim.faults.blackhole("control")
            sim.fault_counts()
        elif state == "completed":
            drive(session, advance=20)
        elif state == "failed":
            sim.faults.refuse(10)
            sim.faults.drop("control")
            with pytest.raises(ManagedSessionError):
                while True:
                    session.next_event(timeout=5)
        started = time.monotonic()
        session.shutdown()
        assert time.monotonic() - started <= timing.graceful_close + 1
        session.shutdown()  # idempotent
    with pytest.raises(ManagedSessionError) as info:
        session.next_event(timeout=0.1)
    assert info.value.kind == "closed"


def test_design_no_json_in_actors_and_no_retry_loop_in_links() -> None:
    root = ROOT / "actors"
    for path in root.rglob("*.py"):
        if "sweep" in path.parts:
            continue  # the sweep's plan and summary are its own JSON files, not wire frames
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name != "json" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert node.module != "json", path
        assert "json." not in path.read_text(), path
    for name in ("supervision/control.py", "supervision/subscription.py",
                 "supervision/link_actor.py", "supervision/parallel_control.py",
                 "supervision/sub_control.py", "supervision/parallel_hub.py"):
        tree = ast.parse((root / name).read_text())
        assert not any(isinstance(n, ast.While) for n in ast.walk(tree)), name
        assert "sleep" not in (root / name).read_text(), name
    assert pykka  # imported for the leak checks in the harness


def test_twenty_continues_lost_in_flight_are_resent_once_each(sim: LocalSimulator) -> None:
    """The lost-continue rule (actors/DESIGN.md §3): re-attached, replay complete, quiet
    window passed: written again."""
    first, _ = sim.available_range()
    end = first + 60
    address = sim.addresses[0]
    expected = sim.expected(first, end, transactions=[address])
    timing = attrs.evolve(FAST, continue_quiet=0.2)
    session = start(sim, first, end, timing=timing)
    losses = iter(range(20))
    try:
        session.subscribe_transactions([address])
        sid = session.session_info.session_id

        def lose_some(event: object) -> None:
            # Armed before the continue that answers this ReadyForContinue.
            if isinstance(event, ReadyForContinue) and next(losses, None) is not None:
                sim.faults.lose_next_continue(session_id=sid)

        events = drive(session, on_event=lose_some, timeout=10)
        stats = session.stats()
    finally:
        session.shutdown()
    check_exact(events, expected)
    lost = [e for e in events if isinstance(e, ContinueLost)]
    assert len(lost) == 20 and all(e.resent for e in lost)
    assert stats["lost_continues"] == 20 and stats["continues_resent"] == 20
    assert stats["double_advances"] == 0
    server = sim.session_stats(sid)
    assert server.blocks_executed == len(expected.slots) - 1  # never advanced twice
    assert sim.fault_counts()["lose_continue"] == 20


def test_lost_continue_with_policy_raise_reaches_the_application_in_time(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    timing = attrs.evolve(FAST, continue_quiet=0.3)
    session = start(sim, first, first + 20, timing=timing, on_lost_continue="raise")
    try:
        wait_ready(session)
        sim.faults.lose_next_continue()
        session.send_continue(ContinueParams(advance_count=3))
        written = time.monotonic()
        while True:
            event = session.next_event(timeout=5)
            if isinstance(event, ContinueLost):
                break
        # Found dead at the keepalive deadline, re-attached, then the quiet window.
        assert time.monotonic() - written < timing.keepalive_deadline + 0.3 + 1.0
        assert event == ContinueLost(ContinueParams(advance_count=3), resent=False)
        assert session.stats()["continue_state"] == "idle"
        session.send_continue(event.params)  # the application re-sends it
        while not isinstance(session.next_event(timeout=5), ReadyForContinue):
            pass
    finally:
        session.shutdown()
    assert sim.session_stats(session.session_info.session_id).blocks_executed == 3


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_for_event_in_session_ends_with_completed(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 80
    events: list[ManagedEvent] = []
    with start(sim, first, end) as session:
        session.subscribe_transactions(sim.addresses[:2])
        for event in session:
            events.append(event)
            if isinstance(event, ReadyForContinue):
                session.send_continue(ContinueParams(advance_count=7))
    assert isinstance(events[-1], Completed)
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))
    assert sum(isinstance(e, ReadyForContinue) for e in events) == math.ceil(
        (len(sim.expected(first, end).slots) - 1) / 7)


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_nothing_follows_completed_in_a_manual_next_event_loop(sim: LocalSimulator) -> None:
    """Completed is the last event: the links closing after it change status() but
    deliver no ConnectionChanged after it."""
    first, _ = sim.available_range()
    with start(sim, first, first + 40) as session:
        session.subscribe_transactions(sim.addresses[:1])
        while not isinstance(event := session.next_event(timeout=10), Completed):
            if isinstance(event, ReadyForContinue):
                session.send_continue(ContinueParams(advance_count=10))
        wait_for(lambda: session.status().get("control") == Closed(), 5,
                 "the control link to close after Completed")
        with pytest.raises((TimeoutError, ManagedSessionError)):
            late = session.next_event(timeout=0.5)
            raise AssertionError(f"an event after Completed: {late}")


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_run_drives_to_the_end_and_injects_what_on_event_returns(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 90
    tx = "AQ" + "A" * 86  # base64 of 65 bytes: a placeholder for a signed transaction
    events: list[ManagedEvent] = []

    def on_event(event: ManagedEvent) -> ContinueParams | None:
        events.append(event)
        readies = sum(isinstance(e, ReadyForContinue) for e in events)
        if isinstance(event, ReadyForContinue) and readies == 2:
            return ContinueParams(advance_count=4, transactions=[tx])
        return None

    with start(sim, first, end) as session:
        session.subscribe_transactions(sim.addresses[:3])
        done = session.run(advance=4, on_event=on_event, timeout=10)
        server = sim.session_stats(session.session_info.session_id)
    assert done is events[-1] and isinstance(done, Completed)
    assert done.summary is not None
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:3]))
    blocks = len(sim.expected(first, end).slots) - 1
    assert server.continues_received == math.ceil(blocks / 4)
    assert server.user_transactions == 1 and server.injected_transactions == (tx,)


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_run_refuses_bad_arguments_before_anything_is_sent(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with start(sim, first, first + 10) as session:
        with pytest.raises(ValueError, match="advance: expected an integer >= 1"):
            session.run(advance=0)
        with pytest.raises(TypeError, match="on_event: expected a callable"):
            session.run(on_event=5)  # type: ignore[arg-type]
        assert session.stats().continues_written == 0


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_unsubscribe_delivers_what_ran_before_and_nothing_after(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 150
    addresses = sim.addresses[:3]
    blocks = sim.expected(first, end).slots
    with no_leaks(FAST.graceful_close + 1):
        session = start(sim, first, end)
        session.subscribe_transactions(addresses)
        session.subscribe_account_diffs(addresses)
        sid = session.session_info.session_id
        events: list[ManagedEvent] = []
        readies = 0
        unsubscribed_after = resubscribed_after = None
        while not isinstance(event := session.next_event(timeout=10), Completed):
            events.append(event)
            if not isinstance(event, ReadyForContinue):
                continue
            readies += 1
            if readies == 10:  # 9 continues of 5 blocks ran, maybe with items in flight
                session.unsubscribe("transactions", timeout=10)
                unsubscribed_after = max(e.slot for e in events if isinstance(e, Slot))
                wait_for(lambda: sim.session_stats(sid).subscribers == 1, 10,
                         "the server to see one subscriber left")
            if readies == 20:
                session.subscribe_transactions(addresses[:1])
                resubscribed_after = max(e.slot for e in events if isinstance(e, Slot))
            session.send_continue(ContinueParams(advance_count=5), timeout=10)
        events.append(event)
        stats = session.stats()
        session.shutdown()
    assert unsubscribed_after == blocks[9 * 5] and resubscribed_after == blocks[19 * 5]
    txs = [e for e in events if isinstance(e, Transaction)]
    before = sim.expected(first, unsubscribed_after, transactions=addresses).signatures
    after = sim.expected(resubscribed_after, end, transactions=addresses[:1]).signatures
    assert [t.signature for t in txs] == before + after
    closed_at = events.index(ConnectionChanged("transactions", Closed()))
    assert max(i for i, e in enumerate(events) if isinstance(e, Transaction)
               and e.slot <= unsubscribed_after) < closed_at
    # The diffs went on untouched, every one of them.
    check_exact([e for e in events if not isinstance(e, Transaction)],
                sim.expected(first, end, account_diffs=addresses))
    assert stats.reconnects == {"control": 0, "account_diffs": 0, "transactions": 0}


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_unsubscribe_refuses_what_is_not_subscribed(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with start(sim, first, first + 10) as session:
        with pytest.raises(ValueError, match="kind: transactions is not subscribed"):
            session.unsubscribe("transactions", timeout=5)
        with pytest.raises(ValueError, match="kind: expected one of"):
            session.unsubscribe("trades", timeout=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"addresses\[0\]"):
            SubscribeStream.transactions(["ADDR"])
        assert SubscribeStream.account_diffs(list(sim.addresses[:2])).addresses == (
            sim.addresses[:2])
        with pytest.raises(ValueError, match="kind: expected one of"):
            UnsubscribeStream("trades")  # type: ignore[arg-type]


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_start_subscribes_before_the_first_continue(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 40
    with start(sim, first, end, transactions=iter(sim.addresses[:2]),
               account_diffs=sim.addresses[3:5]) as session:
        events = drive(session, advance=40)
        assert session.cursor().streams.keys() == {"transactions", "account_diffs"}
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2],
                                     account_diffs=sim.addresses[3:5]))
    with pytest.raises(TypeError, match="transactions: expected a list of addresses"):
        start(sim, first, end, transactions=sim.addresses[0])
    with pytest.raises(ValueError, match=r"addresses\[0\]"):
        start(sim, first, end, account_diffs=["ADDR"])
    assert sim.upgrade_requests().get("control", 0) == 1  # the refused starts sent nothing


def test_continue_lost_params_are_typed() -> None:
    field = attrs.fields_dict(actors.ContinueLost)["params"]
    assert field.type in ("ContinueParams | ContinueToParams",)


def test_injected_transactions_are_typed_in_the_signature() -> None:
    """``help(ContinueParams)`` said ``transactions: Any``: attrs shows the converter's
    parameter type, so the converter now says what a caller may pass."""
    parameters = inspect.signature(ContinueParams.__init__).parameters
    assert parameters["transactions"].annotation == "Iterable[str]"
    assert parameters["modify_account_states"].annotation == "dict[str, AccountData]"
    assert ContinueParams(transactions=iter(["AQID"])).transactions == ("AQID",)


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_stats_are_refused_after_shutdown(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    session = start(sim, first, first + 5)
    session.shutdown()
    with pytest.raises(ManagedSessionError, match="closed"):
        session.stats()
