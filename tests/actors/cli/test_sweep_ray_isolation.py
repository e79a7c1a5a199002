"""An embedded Ray belongs to its sweep: two sweeps never share one, and the Ray
processes a sweep killed with SIGKILL left behind are ended by the next sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from actors.cli.sweep.ray_leftovers import RECORDS_DIR
from protocol.simulator.chain import Chain
from tests.support import ROOT
from tests.support.harness import wait_for
from tests.support.sweep_checks import check_journal

pytest.importorskip("ray")

CLI = [sys.executable, "-m", "actors.cli", "sweep"]
ENV = {k: v for k, v in os.environ.items() if k not in ("BACKTEST_API_KEY", "RAY_ADDRESS")}


def start_sweep(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args, "--out", str(out)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def alive(identity: dict[str, float]) -> bool:
    try:
        process = psutil.Process(int(identity["pid"]))
        return (abs(process.create_time() - identity["started"]) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def test_two_sweeps_at_once_each_run_their_own_ray_and_are_exact(tmp_path: Path) -> None:
    outs = [tmp_path / "A", tmp_path / "B"]
    sweeps = [start_sweep(out, "--sessions", "2", "--slot-count", "150", "--concurrency", "2",
                          "--seed", str(seed)) for seed, out in enumerate(outs)]
    errors = [proc.communicate(timeout=150)[1] for proc in sweeps]
    for proc, err in zip(sweeps, errors, strict=True):
        assert proc.returncode == 0, err
        assert "on Ray (embedded local)" in err
    for seed, out in enumerate(outs):
        summary = json.loads((out / "summary.json").read_text())
        assert summary["completed"] == 2 and summary["failed"] == []
        assert summary["nodes"] == 1  # an embedded Ray is one node: this machine
        for i in range(2):
            check_journal(out / f"session-{i:03d}.jsonl", Chain(seed))


def test_the_next_sweep_ends_the_ray_a_killed_sweep_left_behind(tmp_path: Path) -> None:
    killed = start_sweep(tmp_path / "killed", "--sessions", "2", "--slot-count", "900",
                         "--concurrency", "2", "--advance", "1")
    record = Path(RECORDS_DIR) / f"{killed.pid}.json"
    try:
        wait_for(lambda: record.exists() or killed.poll() is not None, 120,
                 "the killed sweep to write down its Ray")
        assert killed.poll() is None, killed.stderr.read() if killed.stderr else ""
        processes = json.loads(record.read_text())["processes"]
    finally:
        os.kill(killed.pid, signal.SIGKILL)  # the driver only, as a crash or OOM kill does
        killed.wait(timeout=10)
    assert any(alive(p) for p in processes), "nothing of its Ray outlived the driver"
    result = subprocess.run([*CLI, "--sessions", "1", "--slot-count", "20", "--out",
                             str(tmp_path / "next")], cwd=ROOT, env=ENV, text=True,
                            capture_output=True, timeout=150)
    assert result.returncode == 0, result.stderr
    assert [p for p in processes if alive(p)] == []
    assert not record.exists()
    assert "left behind by a sweep that was killed" in result.stderr
