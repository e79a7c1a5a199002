"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_readme_has_the_examples() -> None:
    assert len(BLOCKS) == 5  # blocking, application actor, asyncio, handles, resume
    assert len(BLOCKS[0].strip().splitlines()) <= 15
