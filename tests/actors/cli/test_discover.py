"""``run --discover`` and ``--inject``: pauses before every discovered batch, injects
there, exact against ``expected()``; bad input refused before anything is sent; a
run killed while paused resumes to the journal of a clean run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from protocol.simulator import DEFAULT_API_KEY
from protocol.simulator.chain import Chain, user_transaction
from tests.support import ROOT
from tests.support.harness import wait_for

CLI = [sys.executable, "-m", "actors.cli", "run"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}
STANDALONE = {"seed": 6, "slots": 600}  # the standalone fixture's simulator


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _inject_file(tmp_path: Path, address: str) -> Path:
    path = tmp_path / "inject.txt"
    path.write_text(f"# one probe per pause\n{user_transaction([address], 'probe')}\n")
    return path


def test_embedded_run_pauses_before_every_discovery_and_is_exact(tmp_path: Path) -> None:
    chain = Chain(0, 2000)
    program, address = chain.programs[-1], chain.addresses[0]
    inject = _inject_file(tmp_path, address)
    probe = inject.read_text().splitlines()[1]
    first, _ = chain.available_range()
    expected = chain.expected(first, first + 149, transactions=[address],
                              discover=[program], inject=[probe])
    journal = tmp_path / "j.jsonl"
    result = subprocess.run([*CLI, "--slot-count", "150", "--discover", program, "--inject",
                             str(inject), "--transactions", address, "--out", str(journal),
                             "--json"], cwd=ROOT, env=ENV, text=True, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["delivery"] == "exact"
    assert summary["discoveries"] == summary["pauses"] == len(expected.discoveries) > 5
    records = _records(journal)
    assert [(r["slot"], r["batch_index"]) for r in records if r["type"] == "Paused"] == (
        expected.discoveries)
    assert [r["signature"] for r in records if r["type"] == "Transaction"] == (
        expected.signatures)
    assert records[0]["discover"] == [program] and records[0]["inject"] == [probe]


@pytest.mark.parametrize(("args", "message"), [
    (["--discover", "not-a-program"], "--discover 'not-a-program': expected a base58"),
    (["--inject", "FILE"], "--inject: only with --discover"),
    (["--discover", "PROGRAM", "--inject", "FILE"], "line 2 is not a base64 transaction"),
    (["--discover", "PROGRAM", "--inject", "MISSING"], "cannot read it"),
])
def test_bad_discover_or_inject_is_refused_before_anything_is_sent(
        tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("AAAA\nthis is not base64!\n")
    program = Chain(0, 2000).programs[0]
    args = [{"FILE": str(bad), "MISSING": str(tmp_path / "nope"), "PROGRAM": program}.get(a, a)
            for a in args]
    result = subprocess.run([*CLI, "--url", "ws://127.0.0.1:9", "--api-key", "k",
                             "--start-slot", "1", "--slot-count", "5", *args], cwd=ROOT,
                            env=ENV, text=True, capture_output=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.timeout(120)
def test_killed_while_paused_then_resumed_gives_a_clean_runs_journal(
        standalone: str, tmp_path: Path) -> None:
    chain = Chain(STANDALONE["seed"], STANDALONE["slots"])
    first, _ = chain.available_range()
    program, address = chain.programs[-1], chain.addresses[1]
    inject = _inject_file(tmp_path, address)
    probe = inject.read_text().splitlines()[1]
    expected = chain.expected(first, first + 299, transactions=[address],
                              discover=[program], inject=[probe])
    journal = tmp_path / "j.jsonl"
    key = ["--api-key", DEFAULT_API_KEY, "--continue-quiet", "0.5"]

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*CLI, *args, *key], cwd=ROOT, env=ENV, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def pauses() -> int:
        return journal.read_text().count('"type":"Paused"') if journal.exists() else 0

    proc = start("--url", standalone, "--start-slot", str(first), "--slot-count", "300",
                 "--discover", program, "--inject", str(inject), "--transactions", address,
                 "--out", str(journal))
    for kill, at in enumerate((5, 20, 40), 1):
        wait_for(lambda a=at, p=proc: pauses() >= a or p.poll() is not None, 60,
                 f"{at} pauses journaled (kill {kill})")
        assert proc.poll() is None, f"the run ended before kill {kill}"
        proc.kill()  # SIGKILL, right after a pause was journaled
        proc.wait(timeout=10)
        proc = start("--resume", str(journal))
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    records = _records(journal)[1:]
    assert [(r["slot"], r["batch_index"]) for r in records if r["type"] == "Paused"] == (
        expected.discoveries)
    assert [r["slot"] for r in records if r["type"] == "Slot"] == expected.slots
    got = [r["signature"] for r in records if r["type"] == "Transaction"]
    assert got == expected.signatures, (
        f"missing {[s for s in expected.signatures if s not in got]}, "
        f"extra {[s for s in got if s not in expected.signatures]}, or out of order")
    completed = [r for r in records if r["type"] == "Completed"]
    assert len(completed) == 1
    assert completed[0]["summary"]["blocks_executed"] == len(expected.slots) - 1
