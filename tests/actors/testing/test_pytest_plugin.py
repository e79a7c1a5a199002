"""The test-harness kit as a user outside this repository meets it: the plugin's fixtures,
loaded by entry point, and the exact-delivery check, in a pytest run of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

GUIDE = ROOT / "actors" / "testing" / "TESTING.md"


def run_pytest_outside(tmp_path: Path, source: str, *options: str
                       ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_harness.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *options, "test_harness.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_the_guides_harness_passes_from_a_folder_outside_the_repository(tmp_path: Path
                                                                        ) -> None:
    [example] = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    result = run_pytest_outside(tmp_path, example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_fault_aimed_at_a_slot_with_no_block_raises_at_once_naming_it(tmp_path: Path
                                                                        ) -> None:
    result = run_pytest_outside(tmp_path, '''
import pytest

@pytest.mark.backtest_simulator(seed=2, slots=300)
def test_aim(backtest_simulator):
    produced = set(backtest_simulator.chain.produced)
    first, last = backtest_simulator.available_range()
    skipped = next(s for s in range(first, last) if s not in produced)
    with pytest.raises(ValueError, match=f"at_slot: slot {skipped} has no block"):
        backtest_simulator.faults.drop("transactions", at_slot=skipped)
    assert backtest_simulator.available_range() == (first, first + 299)
''')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_leaked_session_fails_the_leak_check(tmp_path: Path) -> None:
    result = run_pytest_outside(tmp_path, '''
from actors import ManagedBacktestSession
from protocol import CreateSession

LEAKED = []

def test_leaks(backtest_simulator, backtest_leak_check):
    sim = backtest_simulator
    first, _ = sim.available_range()
    LEAKED.append(ManagedBacktestSession.start(
        sim.url, "local-dev-key", CreateSession(start_slot=first, end_slot=first + 10),
        timing=sim.timing, policy=sim.policy))

def test_cleanup():
    for session in LEAKED:
        session.shutdown()
''', "-o", "backtest_leak_deadline=0.5")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR test_harness.py::test_leaks - Failed: left behind after 0.5s" in result.stdout
    assert "2 passed, 1 error" in result.stdout
