"""``backtest-actors sweep``: many sessions at once, their journals, resume.

The command runs as a user runs it (a subprocess, the embedded simulator and
an embedded local Ray); the kill test kills the sweep with SIGKILL and resumes
it with ``--resume DIR`` against a simulator in its own process. The Ray
worker and outage tests are in ``test_sweep_ray.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors.cli.sweep.plan import PlanError, read_sweep_file, resolve
from actors.runtime.reconnect_gate import LocalReconnectGate
from protocol import RECONNECT_UNGATED_ATTEMPTS, ReconnectPolicy
from protocol.simulator import DEFAULT_API_KEY
from protocol.simulator.chain import Chain
from tests.support import ROOT
from tests.support.harness import wait_for
from tests.support.sweep_checks import check_journal

CLI = [sys.executable, "-m", "actors.cli", "sweep"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}


def sweep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=ENV, text=True, capture_output=True,
                          timeout=timeout)


def summary_of(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "summary.json").read_text())


# --- the command: 8 sessions, 4 at once, embedded simulator and embedded Ray -------------


def test_sweep_of_8_sessions_on_embedded_ray_matches_the_chain(tmp_path: Path) -> None:
    out = tmp_path / "D"
    result = sweep("--sessions", "8", "--slot-count", "200", "--concurrency", "4",
                   "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "on Ray (embedded local)" in result.stderr
    summary = summary_of(out)
    assert summary["sessions"] == 8 and summary["completed"] == 8
    assert summary["failed"] == [] and summary["backend"] == "ray"
    chain = Chain(0)
    first, _ = chain.available_range()
    headers = [check_journal(out / f"session-{i:03d}.jsonl", chain) for i in range(8)]
    # Eight consecutive ranges of 200 slots from the start of the available range.
    assert [(h["startSlot"], h["endSlot"]) for h in headers] == [
        (first + 200 * i, first + 200 * i + 199) for i in range(8)]
    assert len({h["sessionId"] for h in headers}) == 8
    per = summary["per_session"]
    assert [p["status"] for p in per] == ["completed"] * 8
    assert sum(p["slots"] for p in per) == summary["events"]["Slot"]
    assert sum(p["transactions"] for p in per) == summary["events"]["Transaction"]
    assert all(p["duplicates_delivered"] == 0 for p in per)
    # In a pipe: plain progress lines, no carriage returns.
    assert "\r" not in result.stderr
    assert re.search(r"sweep: 8/8 sessions done, 0 running, 1600/1600 slots", result.stderr)


def test_sweep_in_process_says_so_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "D"
    result = sweep("--sessions", "3", "--slot-count", "60", "--concurrency", "3",
                   "--advance", "5", "--no-ray", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "on this process (--no-ray)" in result.stderr
    summary = summary_of(out)
    assert summary["completed"] == 3 and summary["backend"] == "in-process"
    for i in range(3):
        assert check_journal(out / f"session-{i:03d}.jsonl", Chain(0))["advance"] == 5


def test_bad_sweep_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[range]]\ncount = 0\n")
    for args, needle in ((["--sessions", "0"], "expected a number >= 1"),
                         ([str(bad)], "range[0].count: expected an integer >= 1"),
                         ([str(bad), "--sessions", "2"], "not both"),
                         (["--sessions", "2", "--slot-count", "2000"], "holds slots up to"),
                         (["--url", "ws://127.0.0.1:1"], "--api-key"),
                         (["--resume", str(tmp_path), "--sessions", "2"], "leave it out")):
        result = sweep(*args, "--no-ray")
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr


# --- the sweep file -------------------------------------------------------------------------


def test_sweep_file_ranges_follow_each_other_and_override_defaults(tmp_path: Path) -> None:
    chain = Chain(0)
    a, b = chain.addresses[:2]
    path = tmp_path / "s.toml"
    path.write_text(f'advance = 4\ntransactions = ["{a}"]\n\n[[range]]\ncount = 10\n'
                    f'repeat = 2\n\n[[range]]\nstart = 400000100\ncount = 5\nadvance = 1\n'
                    f'account_diffs = ["{b}"]\ntransactions = []\n')
    sweep_file = read_sweep_file(str(path))
    specs = resolve(sweep_file, 400000000, 400001999, None)
    assert [(s.start_slot, s.end_slot, s.advance) for s in specs] == [
        (400000000, 400000009, 4), (400000010, 400000019, 4), (400000100, 400000104, 1)]
    assert specs[0].transactions == (a,) and specs[2].transactions == ()
    assert specs[2].account_diffs == (b,)
    path.write_text('[[range]]\ncount = 5\ntransactions = ["not-an-address"]\n')
    with pytest.raises(PlanError, match=r"range\[0\]\.transactions\[0\]"):
        read_sweep_file(str(path))
    path.write_text('[[range]]\ncount = 5\nspeed = 2\n')
    with pytest.raises(PlanError, match="unknown key"):
        read_sweep_file(str(path))


def guide_sweep_example() -> tuple[str, list[str]]:
    """The sweep file example of actors/cli/sweep/SWEEPS.md and the command that runs it."""
    text = (ROOT / "actors" / "cli" / "sweep" / "SWEEPS.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", text, re.S)
    command = re.search(r"\n\.venv/bin/(backtest-actors sweep sweep\.toml [^\n]*)\n", text)
    assert toml and command, "SWEEPS.md has no sweep file example"
    return toml.group(1), command.group(1).split()[2:]


def test_the_guides_sweep_file_example_runs(tmp_path: Path) -> None:
    toml, args = guide_sweep_example()
    (tmp_path / "sweep.toml").write_text(toml)
    result = subprocess.run([*CLI, *args], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)},
                            text=True, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = tmp_path / args[args.index("--out") + 1]
    summary = summary_of(out)
    assert summary["completed"] == summary["sessions"] >= 3 and summary["failed"] == []
    for entry in summary["per_session"]:
        check_journal(out / entry["journal"], Chain(0))


# --- SIGKILL, then --resume DIR -------------------------------------------------------------


STANDALONE = {"seed": 6, "slots": 1200}  # the standalone fixture's simulator


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.timeout(180)
def test_sweep_killed_with_sigkill_then_resume_dir_is_exact(standalone: str,
                                                             tmp_path: Path) -> None:
    chain = Chain(6, 1200)
    first, _ = chain.available_range()
    out = tmp_path / "D"
    key = ["--api-key", DEFAULT_API_KEY]
    proc = subprocess.Popen(
        [*CLI, "--url", standalone, *key, "--start-slot", str(first), "--sessions", "6",
         "--slot-count", "150", "--concurrency", "3", "--continue-quiet", "0.5", "--out",
         str(out)], cwd=ROOT, env=ENV, text=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    reader.start()
    journals = [out / f"session-{i:03d}.jsonl" for i in range(6)]
    # Killed while the first sessions are half way: some done or running, some not begun.
    wait_for(lambda: line_count(journals[0]) >= 400 or proc.poll() is not None, 90,
             "the first journal to pass 400 lines")
    assert proc.poll() is None, "".join(stderr)
    # SIGKILL to the sweep and its embedded Ray (its process group): no summary, no
    # detach, every socket closed by the kernel.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    reader.join(timeout=5)
    assert not all("Completed" in j.read_text() for j in journals if j.exists())
    result = sweep("--resume", str(out), *key, "--continue-quiet", "0.5", timeout=150)
    assert result.returncode == 0, result.stderr
    summary = summary_of(out)
    assert summary["sessions"] == 6 and summary["completed"] == 6 and summary["failed"] == []
    headers = [check_journal(j, chain, DEFAULT_API_KEY) for j in journals]
    assert [(h["startSlot"], h["endSlot"]) for h in headers] == [
        (first + 150 * i, first + 150 * i + 149) for i in range(6)]
    assert all(p["duplicates_delivered"] == 0 for p in summary["per_session"])


def test_resume_of_an_embedded_sweep_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "D"
    assert sweep("--sessions", "1", "--slot-count", "20", "--no-ray", "--out",
                 str(out)).returncode == 0
    result = sweep("--resume", str(out), "--no-ray")
    assert result.returncode == 2 and "embedded simulator" in result.stderr


# --- the reconnect gate ---------------------------------------------------------------------


def test_gate_grants_at_most_limit_first_come_first_served() -> None:
    gate = LocalReconnectGate(2, lease=30.0)
    granted: list[str] = []
    try:
        for token in "abcd":
            gate.request(token, lambda t=token: granted.append(t))
        assert granted == ["a", "b"] and gate.stats()["waiting"] == 2
        gate.release("c")  # withdrawn before its grant
        gate.release("a")
        assert granted == ["a", "b", "d"]
        gate.release("b")
        gate.release("b")  # twice: nothing
        gate.release("d")
        assert gate.stats() == {"granted": 3, "waited": 2, "expired": 0, "peak_held": 2,
                                "held": 0, "waiting": 0, "limit": 2}
    finally:
        gate.close()


def test_gate_takes_back_a_permit_held_past_its_lease() -> None:
    gate = LocalReconnectGate(1, lease=0.2)
    granted: list[str] = []
    try:
        gate.request("dead-holder", lambda: granted.append("dead-holder"))
        gate.request("next", lambda: granted.append("next"))
        wait_for(lambda: granted == ["dead-holder", "next"], 5, "the lease to expire")
        assert gate.stats()["expired"] == 1
    finally:
        gate.close()


def test_policy_gates_only_after_the_ungated_attempts() -> None:
    gate = LocalReconnectGate(1)
    try:
        policy = ReconnectPolicy(gate=gate)
        assert RECONNECT_UNGATED_ATTEMPTS == 5
        assert [policy.gated(n) for n in range(1, 8)] == [False] * 5 + [True] * 2
        assert not ReconnectPolicy().gated(100)
        with pytest.raises(ValueError, match="ungated_attempts"):
            ReconnectPolicy(ungated_attempts=-1)
    finally:
        gate.close()


# --- retryable failures, in this process -----------------------------------------------------


@pytest.mark.timeout(120)
def test_sessions_whose_reconnect_budget_is_spent_resume_from_their_journals(
        tmp_path: Path) -> None:
    """The in-process backend, the same supervision: an outage longer than the sessions'
    reconnect budget fails them (retryable), and the driver resumes each from its journal."""
    from actors.cli.sweep import Sweep, SweepConfig, SweepPlan
    from actors.cli.sweep.plan import RangeRule, SweepFile
    from protocol import Timing
    from protocol.simulator import LocalSimulator, ServerLiveness
    from protocol.simulator.proxy import FaultProxy

    timing = Timing(connect=1.0, handshake=3.0, keepalive_interval=0.2, keepalive_deadline=1.0,
                    graceful_close=1.0, continue_quiet=0.5)
    policy = ReconnectPolicy(initial=0.05, max_delay=0.1, jitter=0.0, max_attempts=100,
                             max_total=0.4, uptime_reset=5.0)
    with LocalSimulator(seed=3, slots=1000,
                        liveness=ServerLiveness(keepalive_interval=0.2,
                                                keepalive_deadline=1.0)) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        first, last = sim.available_range()
        specs = resolve(SweepFile((RangeRule(150, None, 3),), None, 1), first, last,
                        (tuple(sim.addresses[:2]), tuple(sim.addresses[2:4])))
        config = SweepConfig(SweepPlan(sim.url, specs), proxy.url_for(sim.url),
                             DEFAULT_API_KEY, str(tmp_path), concurrency=3, timing=timing,
                             policy=policy, backend="in-process", retries=10)
        sweep = Sweep(config)
        done: list[dict] = []  # type: ignore[type-arg]
        thread = threading.Thread(target=lambda: done.append(sweep.run()))
        thread.start()
        wait_for(lambda: len(sweep.running_progress) == 3 and all(
            20 <= p["done"] <= 90 for p in sweep.running_progress), 60,
            "three sessions under way")
        proxy.refuse(1.5)  # longer than the 0.4 s budget of every link
        proxy.reset()
        thread.join(90)
        assert not thread.is_alive(), "the sweep did not end"
    summary = done[0]
    assert summary["completed"] == 3 and summary["failed"] == [] and summary["lost_workers"] == 0
    for entry in summary["per_session"]:
        assert entry["resumes"] >= 1 and entry["attempts"] == entry["resumes"] + 1
        assert all("budget spent" in reason for reason in entry["reasons"]), entry["reasons"]
        check_journal(tmp_path / entry["journal"], sim.chain)
