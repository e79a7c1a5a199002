"""The lower-level handles: a control connection alone, a subscription alone.

Both are the managed session's own supervisor and connection actors with fewer
links. Faults break the transport (the TCP fault proxy); the server is never
told.
"""

from __future__ import annotations

import ast
import json
import select
import subprocess
import sys
from pathlib import Path

import pykka
import pytest

from actors import (
    Completed,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    SendContinue,
    Slot,
)
from actors.frontdoors.handles import (
    spawn_account_diff_subscription,
    spawn_control,
    spawn_transaction_subscription,
)
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support import ROOT
from tests.support.harness import FAST, FAULT_POLICY, check_exact, no_leaks, wait_for

pytestmark = pytest.mark.backtest_simulator(seed=43, slots=200)


def test_control_handle_alone_drives_a_session_to_completed_through_drops(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net
    first, _ = sim.available_range()
    end = first + 100
    expected = sim.expected(first, end, transactions=[], account_diffs=[])
    events: list[ManagedEvent] = []
    with no_leaks(FAST.graceful_close + 2):
        with spawn_control(proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, end),
                           timing=FAST, policy=FAULT_POLICY) as control:
            written = 0
            for event in control:
                events.append(event)
                if isinstance(event, ReadyForContinue):
                    control.send_continue(ContinueParams(advance_count=3), timeout=20)
                    written += 1
                    if written in (3, 12, 25):
                        wait_for(lambda: proxy.connections("control") == 1, 10,
                                 "the control connection back")
                        proxy.reset("control")
            stats = control.stats()
            sid = control.session_info.session_id
            assert set(control.status()) == {"control"}
    assert [e.slot for e in events if isinstance(e, Slot)] == expected.slots
    assert sum(isinstance(e, Completed) for e in events) == 1
    assert proxy.counts()["reset"] == 3
    # A keepalive deadline tripped by a saturated machine may add a reconnect.
    assert stats["reconnects"]["control"] >= 3
    assert stats["double_advances"] == 0
    assert sim.session_stats(sid).blocks_executed == len(expected.slots) - 1


def test_a_second_process_watches_a_session_through_subscription_handles(
        net: tuple[LocalSimulator, FaultProxy], tmp_path: Path) -> None:
    """The test process drives (and subscribes itself); a second process watches
    the same session through two subscription handles. Every PubSub connection
    (both processes') and the control are reset along the way: each process gets
    every item exactly once."""
    sim, proxy = net
    first, _ = sim.available_range()
    end = first + 60  # within the server's 100-slot replay buffer: a watcher's only margin
    tx, diffs = list(sim.addresses[:3]), list(sim.addresses[1:4])
    expected = sim.expected(first, end, transactions=tx, account_diffs=diffs)
    out = tmp_path / "watched.jsonl"
    events: list[ManagedEvent] = []
    with ManagedBacktestSession.start(proxy.url_for(sim.url), DEFAULT_API_KEY,
                                      CreateSession(first, end), timing=FAST,
                                      policy=FAULT_POLICY) as session:
        session.subscribe_transactions(tx)
        session.subscribe_account_diffs(diffs)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "tests.support.watch_driver", session.session_info.rpc_endpoint,
             str(first), ",".join(tx), ",".join(diffs), str(len(expected.signatures)),
             str(len(expected.diff_keys)), str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None
            ready, _, _ = select.select([watcher.stdout], [], [], 20)
            assert ready and watcher.stdout.readline().strip() == "ready"
            assert proxy.connections("pubsub") == 4
            written = 0
            while not isinstance(event := session.next_event(timeout=20), Completed):
                events.append(event)
                if isinstance(event, ReadyForContinue):
                    session.send_continue(ContinueParams(advance_count=2), timeout=20)
                    written += 1
                    if written in (4, 14):
                        # Both processes' links are back from the previous reset.
                        wait_for(lambda: proxy.connections("pubsub") == 4, 10,
                                 "four PubSub connections")
                        assert proxy.reset("pubsub") == 4
                    elif written == 9:
                        proxy.reset("control")
            events.append(event)
            output, errors = watcher.communicate(timeout=45)
        finally:
            watcher.kill()
            watcher.wait(10)
        assert watcher.returncode == 0, errors
        stats = session.stats()
    check_exact(events, expected)
    # Two resets of every PubSub connection, both processes' (exact at the proxy); a
    # keepalive deadline tripped on a saturated machine may add a reconnect.
    assert proxy.counts()["reset"] == 4 + 4 + 1  # connections: two PubSub resets, one control
    assert stats["reconnects"]["transactions"] >= 2
    assert stats["reconnects"]["account_diffs"] >= 2
    watched = [json.loads(line) for line in out.read_text().splitlines() if line]
    signatures = [w["signature"] for w in watched if w["type"] == "Transaction"]
    diff_keys = [(w["signature"], w["account"]) for w in watched if w["type"] == "AccountDiff"]
    assert sorted(signatures) == sorted(expected.signatures)
    assert sorted(diff_keys) == sorted(expected.diff_keys)
    assert len(set(signatures)) == len(signatures) and len(set(diff_keys)) == len(diff_keys)
    for kind in ("Transaction", "AccountDiff"):
        slots = [w["slot"] for w in watched if w["type"] == kind]
        assert slots == sorted(slots), f"{kind}: out of slot order in the watcher"
    watcher_reconnects = ast.literal_eval(output.split("reconnects ", 1)[1].strip())
    assert watcher_reconnects[0]["transactions"] >= 2, output
    assert watcher_reconnects[1]["account_diffs"] >= 2, output


def test_subscription_handle_refuses_bad_input_before_connecting() -> None:
    with pytest.raises(ValueError, match="rpc_endpoint"):
        spawn_transaction_subscription("not a url", ["11111111111111111111111111111111"])
    with pytest.raises(ValueError, match="replay_from_slot"):
        spawn_account_diff_subscription("http://127.0.0.1:1/backtest/s",
                                        ["11111111111111111111111111111111"],
                                        replay_from_slot=-1)
    with pytest.raises(TypeError, match="on_lost_continue"):
        spawn_transaction_subscription("http://127.0.0.1:1/backtest/s",
                                       ["11111111111111111111111111111111"],
                                       on_lost_continue="raise")
    with pytest.raises(ValueError):
        spawn_transaction_subscription("http://127.0.0.1:1/backtest/s", ["ADDR"])


def test_a_subscription_handle_cannot_continue(net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, _ = net
    first, _ = sim.available_range()
    with no_leaks(FAST.graceful_close + 2):
        with spawn_control(sim.url, DEFAULT_API_KEY, CreateSession(first, first + 5),
                           timing=FAST, policy=FAULT_POLICY) as control, \
                spawn_transaction_subscription(control.session_info, sim.addresses[:1],
                                               timing=FAST, policy=FAULT_POLICY) as watcher:
            reply: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
            watcher.supervisor.tell(SendContinue(ContinueParams(), reply))
            with pytest.raises(ManagedSessionError, match="no control connection"):
                reply.get(timeout=5)
