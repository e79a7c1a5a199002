"""A link whose connections are reset or silenced again and again: with the flaky-link
knobs a run gives the journal a clean run gives, and the journal keeps the knobs for
--resume. Faults are aimed at the run's progress (20 %, 40 %, 60 %, 80 %), so a fast
machine cannot finish between them; SLOTS = 1500 is the longer check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support import ROOT
from tests.support.harness import FAULT_SERVER
from tests.support.sweep_checks import check_journal

CLI = [sys.executable, "-m", "actors.cli", "run"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}
SLOTS = 800
KNOBS = ["--keepalive-interval", "0.2", "--keepalive-deadline", "0.6",
         "--reconnect-attempts", "60"]


def delivered(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The journal's delivered items, in order within each stream (the streams are separate
    connections, so how they interleave differs from run to run), without what differs
    between any two runs (session ids, connection changes, sequence numbers)."""
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    streams: dict[str, list[tuple[Any, ...]]] = {}
    for r in records:
        if r["type"] in ("Slot", "Transaction", "AccountDiff", "Completed"):
            streams.setdefault(r["type"], []).append(
                (r.get("slot"), r.get("signature"), r.get("account")))
    return streams


@pytest.mark.timeout(240)
def test_a_run_through_a_flaky_link_gives_a_clean_runs_journal(tmp_path: Path) -> None:
    with LocalSimulator(seed=2, slots=1600, liveness=FAULT_SERVER) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        first, _ = sim.available_range()
        common = ["--api-key", DEFAULT_API_KEY, "--start-slot", str(first), "--slot-count",
                  str(SLOTS), "--advance", "1", "--quiet", "--transactions", sim.addresses[0],
                  "--account-diffs", sim.addresses[2]]
        clean = subprocess.run([*CLI, "--url", sim.url, *common, "--out",
                                str(tmp_path / "clean.jsonl")], cwd=ROOT, env=ENV,
                               capture_output=True, text=True, timeout=120)
        assert clean.returncode == 0, clean.stderr
        flaky = subprocess.Popen([*CLI, "--url", proxy.url_for(sim.url), *common, *KNOBS,
                                  "--out", str(tmp_path / "flaky.jsonl")], cwd=ROOT, env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Faults at 20 %, 40 %, 60 % and 80 % of the clean run's journal, so that a fast
        # machine cannot finish between two of them; each is a reset (or, every third, a
        # blackhole) of every connection through the proxy.
        flaky_journal = tmp_path / "flaky.jsonl"
        total = len((tmp_path / "clean.jsonl").read_text().splitlines())
        faults, deadline = 0, time.monotonic() + 180
        for share in (0.2, 0.4, 0.6, 0.8):
            def reached(share: float = share) -> bool:
                return flaky.poll() is not None or (flaky_journal.exists() and len(
                    flaky_journal.read_text().splitlines()) >= share * total)
            while not reached() and time.monotonic() < deadline:
                time.sleep(0.005)  # polling the journal's progress, with a deadline
            if flaky.poll() is not None:
                break
            if faults % 3 == 2:
                proxy.blackhole("all")
            else:
                proxy.reset("all")
            faults += 1
        out, err = flaky.communicate(timeout=60)
        assert flaky.returncode == 0, err + out
        assert faults == 4, "the run ended before the link was broken four times"
        assert delivered(tmp_path / "flaky.jsonl") == delivered(tmp_path / "clean.jsonl")
        check_journal(tmp_path / "flaky.jsonl", sim.chain, DEFAULT_API_KEY)
        header = json.loads((tmp_path / "flaky.jsonl").read_text().splitlines()[0])
        assert header["knobs"] == {"keepalive_interval": 0.2, "keepalive_deadline": 0.6,
                                   "reconnect_attempts": 60}
