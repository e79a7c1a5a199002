"""``sweep --resume DIR`` carries on the sweep as it was started: its concurrency too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from actors.cli.sweep.plan import SessionSpec, SweepPlan
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support import ROOT

CLI = [sys.executable, "-m", "actors.cli", "sweep"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--api-key", DEFAULT_API_KEY, "--no-ray"], cwd=ROOT,
                          env=ENV, text=True, capture_output=True, timeout=120)


def test_the_plan_file_keeps_the_concurrency() -> None:
    spec = SessionSpec(0, 10, 20, ("a",), (), 1)
    plan = SweepPlan("ws://127.0.0.1:1/backtest", (spec,), concurrency=3)
    assert SweepPlan.from_json(plan.to_json()) == plan
    older = plan.to_json().replace('"concurrency": 3', '"concurrency": null')
    assert SweepPlan.from_json(older).concurrency is None


def test_resume_keeps_the_concurrency_it_was_started_with(tmp_path: Path) -> None:
    out = tmp_path / "D"
    with LocalSimulator() as sim:
        first, _ = sim.available_range()
        started = sweep("--url", sim.url, "--start-slot", str(first), "--sessions", "3",
                        "--slot-count", "30", "--concurrency", "3", "--out", str(out))
        assert started.returncode == 0, started.stderr
        assert "3 sessions, 3 at once" in started.stderr
        resumed = sweep("--resume", str(out))
        assert resumed.returncode == 0, resumed.stderr
        assert "3 sessions, 3 at once" in resumed.stderr
        told = sweep("--resume", str(out), "--concurrency", "2")
        assert told.returncode == 0, told.stderr
        assert "3 sessions, 2 at once" in told.stderr
