"""scripts/profile_blast.py --summarize: py-spy's raw samples as self time per function."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from profile_blast import summarize  # noqa: E402


def test_samples_add_up_per_function_and_start_up_is_left_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "prof.txt"
    raw.write_text(
        "run (bench.py:10);decode (fastpath.py:160) 30\n"
        "run (bench.py:10);decode (fastpath.py:167) 20\n"  # same function, another line
        "run (bench.py:11) 50\n"
        "<module> (x.py:1);_compile_bytecode (<frozen importlib._bootstrap_external>:729) 900\n"
        "run (bench.py:10);<native> 0\n")
    assert summarize(raw, top=5) == 0
    out = capsys.readouterr().out
    assert out.startswith("100 samples")
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert rows == ["| `decode` | fastpath.py | 50.0 |", "| `run` | bench.py | 50.0 |"]
