"""Two processes resume the same journal at once: one runs the session to its end; the
other is told that another process owned it, never that the session expired."""

from __future__ import annotations

import os
import subprocess
import sys

from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support import ROOT
from tests.support.harness import wait_for

CLI = [sys.executable, "-m", "actors.cli", "run"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}


def test_the_loser_of_two_concurrent_resumes_is_told_another_process_owned_it(
        tmp_path: os.PathLike[str]) -> None:
    journal = os.path.join(tmp_path, "j.jsonl")
    key = ["--api-key", DEFAULT_API_KEY]
    with LocalSimulator() as sim:
        first, _ = sim.available_range()
        run = subprocess.Popen([*CLI, "--url", sim.url, *key, "--start-slot", str(first),
                                "--slot-count", "600", "--advance", "1", "--out", journal,
                                "--quiet"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: os.path.exists(journal) and open(journal).read().count("\n") > 100
                     or run.poll() is not None, 60, "the run to be under way")
        finally:
            run.kill()
            run.wait(timeout=10)
        resumes = [subprocess.Popen([*CLI, "--resume", journal, *key, "--quiet"], cwd=ROOT,
                                    env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True) for _ in range(2)]
        results = [(proc, proc.communicate(timeout=120)[1]) for proc in resumes]
    codes = sorted(proc.returncode for proc, _ in results)
    assert codes == [0, 1], results
    [loser] = [err for proc, err in results if proc.returncode == 1]
    assert "another process" in loser, loser
    assert "expired" not in loser and "is the URL right" not in loser, loser
