"""The bounded chaos soak: 5 sessions, 100 slots, about 30 faults of every kind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "soak.py"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [[], ["--discover"], ["--parallel"]],
                         ids=["continue", "discover", "parallel"])
def test_bounded_soak_loses_duplicates_and_leaks_nothing(mode: list[str]) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--sessions", "5", "--slots", "100",
                             "--faults", "30", "--seed", "1", *mode],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr

    def row(name: str) -> str:
        match = re.search(rf"\| {re.escape(name)} \| (.*?) \|", result.stdout)
        assert match, result.stdout
        return match.group(1)

    sessions = 10 if "--parallel" in mode else 5  # two sub-sessions per parallel session
    assert row("sessions completed / failed") == f"{sessions} / 0"
    assert row("missing") == row("duplicated") == row("double advances") == "0"
    assert row("gaps reported") == row("missing without a gap report") == "0"
    assert row("threads left after shutdown") == row("actors left after shutdown") == "0"
    expected, delivered = row("events expected / delivered (slots, txs, diffs)").split(" / ")
    assert expected == delivered
    sent, advanced = row("continues (chunks) received / server-side advances").split(" / ")
    assert sent == advanced
    assert int(row("faults injected: total")) >= 25
    for kind in ("drop", "blackhole", "malformed", "refuse", "http_status", "delay_handshake"):
        assert int(row(f"faults injected: {kind}")) >= 1, kind
    if "--discover" in mode:  # every session paused before each batch of its program, once
        want, reached = row("pauses expected / reached").split(" / ")
        assert want == reached and int(want) > 20
        assert row("discoveries or pauses out of order, lost or twice") == "0"
