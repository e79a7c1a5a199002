"""Shutdown: bounded and complete, also while an upgrade hangs or right after a session
came up; nothing is left behind."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from actors import ManagedBacktestSession
from protocol import CreateSession, ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import no_leaks, start, wait_for


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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
