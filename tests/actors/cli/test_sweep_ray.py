"""Sweeps on Ray under loss: a worker killed mid-sweep, a simulator-wide outage.

One embedded local Ray serves the module (it takes seconds to start); it runs
on the loopback interface, like the simulator and the fault proxy. The
sweeps run through the Python API (:class:`actors.cli.sweep.Sweep`) so the tests
can reach a worker to kill it and pass short timings as config objects.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.cli.sweep import Sweep, SweepConfig, SweepPlan
from actors.cli.sweep.driver import LOOPBACK_RAY_ENV
from actors.cli.sweep.plan import RangeRule, SweepFile, resolve
from protocol import ReconnectPolicy, Timing
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator, ServerLiveness
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import wait_for
from tests.support.sweep_checks import check_journal

TIMING = Timing(connect=2.0, handshake=5.0, keepalive_interval=0.2, keepalive_deadline=1.0,
                graceful_close=1.0, continue_quiet=0.5)
SERVER = ServerLiveness(keepalive_interval=0.2, keepalive_deadline=1.0)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    os.environ.setdefault(LOOPBACK_RAY_ENV, "0")  # before Ray is imported: loopback only
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def plan_for(sim: LocalSimulator, sessions: int, slots: int, advance: int = 1) -> SweepPlan:
    first, last = sim.available_range()
    addresses = (tuple(sim.addresses[:2]), tuple(sim.addresses[2:4]))
    specs = resolve(SweepFile((RangeRule(slots, None, sessions),), None, advance), first,
                    last, addresses)
    return SweepPlan(sim.url, specs)  # not the sweep's own simulator: plain journals


class Running:
    """A sweep on a thread of the test, so the test can act on it while it runs."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sweep-under-test")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.sweep.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc

    def result(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), (
            f"the sweep did not end within {timeout}s: running {self.sweep.running_progress}, "
            f"records {[(r.spec.index, r.status, r.attempts) for r in self.sweep.records.values()]}"
            f", gate {self.sweep.backend.gate_stats() if self.sweep.backend else None}")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


@pytest.mark.timeout(150)
def test_a_killed_ray_worker_resumes_its_sessions_elsewhere_exactly(
        ray_instance: Any, tmp_path: Path) -> None:
    with LocalSimulator(seed=8, slots=2500, liveness=SERVER) as sim:
        policy = ReconnectPolicy(initial=0.02, max_delay=0.2, max_attempts=40, max_total=30.0,
                                 uptime_reset=5.0)
        config = SweepConfig(plan_for(sim, 8, 300), sim.url, DEFAULT_API_KEY, str(tmp_path),
                             concurrency=4, timing=TIMING, policy=policy, backend="ray",
                             workers=2)
        sweep = Sweep(config)
        running = Running(sweep)

        def worker0_busy() -> set[int] | None:
            backend: Any = sweep.backend
            if backend is None or 0 not in backend.load:
                return None
            on_0 = set(backend.load[0])
            done = {p["index"]: p["done"] for p in sweep.running_progress}
            # Both its sessions are under way, neither is near its end.
            return on_0 if len(on_0) == 2 and all(
                40 <= done.get(i, 0) <= 150 for i in on_0) else None

        victims = wait_for(worker0_busy, 60, "worker 0 to run two sessions half way")
        backend: Any = sweep.backend
        ray_instance.kill(backend.workers[0])
        summary = running.result(120)
        assert summary["sessions"] == 8 and summary["completed"] == 8, summary["failed"]
        assert summary["failed"] == [] and summary["lost_workers"] == 1
        per = {p["index"]: p for p in summary["per_session"]}
        for index in victims:
            assert per[index]["attempts"] == 2 and per[index]["resumes"] == 1
            assert len(per[index]["reasons"]) == 1
            assert per[index]["reasons"][0].startswith("worker 0 lost")
        assert summary["resumes"] == len(victims)
        assert all(backend.last_worker[i] != 0 for i in victims)  # resumed on another worker
        for entry in summary["per_session"]:
            check_journal(tmp_path / entry["journal"], sim.chain)
            assert entry["duplicates_delivered"] == 0
        expected_slots = sum(len(sim.expected(p["start_slot"], p["end_slot"]).slots)
                             for p in summary["per_session"])
        assert summary["events"]["Slot"] == expected_slots
        assert summary["events"]["Completed"] == 8


@pytest.mark.timeout(150)
def test_simulator_wide_outage_recovers_every_session_with_k_reconnects_at_once(
        ray_instance: Any, tmp_path: Path) -> None:
    k = 4
    with LocalSimulator(seed=9, slots=3300, liveness=SERVER) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        # Five quick ungated restarts (0.31 s) are spent inside the 2 s outage; the rest
        # queue at the gate.
        policy = ReconnectPolicy(initial=0.01, multiplier=2.0, max_delay=0.2, jitter=0.0,
                                 max_attempts=100, max_total=30.0, uptime_reset=5.0)
        url = proxy.url_for(sim.url)
        config = SweepConfig(plan_for(sim, 16, 200), url, DEFAULT_API_KEY, str(tmp_path),
                             concurrency=k, timing=TIMING, policy=policy, backend="ray")
        sweep = Sweep(config)
        running = Running(sweep)
        wait_for(lambda: len(sweep.running_progress) == k and all(
            10 <= p["done"] <= 150 for p in sweep.running_progress), 60,
            f"{k} sessions under way, none near its end")
        assert sim.resume_counts() == {"resume_handshakes": 0, "peak_concurrent_resumes": 0}
        links = proxy.connections()
        proxy.refuse(2.0)  # the server is away for everyone ...
        proxy.reset()  # ... and every live connection breaks (the server is not told)
        summary = running.result(120)
        counts = sim.resume_counts()
    assert summary["completed"] == 16 and summary["failed"] == [], summary["failed"]
    for entry in summary["per_session"]:
        check_journal(tmp_path / entry["journal"], sim.chain)
    gate = summary["reconnect_gate"]
    # No session failed or stalled (a session silent for Timing.handshake would be
    # re-attached as stalled: the hang this test once found is fixed in the gate).
    stalled = [r for p in summary["per_session"] for r in p["reasons"]]
    assert stalled == [], stalled
    print(f"outage: {links} links broken, server saw {counts}, gate {gate}, "
          f"reconnects {summary['reconnects']}, stalled sessions re-attached {len(stalled)}")
    assert links == 3 * k
    # Every broken link came back by exactly one resume handshake that the server answered
    # (three more for each stalled session re-attached).
    assert counts["resume_handshakes"] == links + 3 * len(stalled)
    # ... never more than K at once: the ungated attempts were spent inside the outage.
    assert 1 <= counts["peak_concurrent_resumes"] <= k
    assert gate["limit"] == k and gate["peak_held"] <= k and gate["held"] == 0
    assert gate["granted"] >= links and gate["waited"] > 0
    assert summary["reconnects"] >= links
