"""Every code example in the documentation runs as written, and the README stays a front page.

The examples are the ``python`` blocks of every Markdown file in the repository (the README
and the guides beside the code), and the README's ``scripts/run`` lines that need no network,
key or file. The README's examples as users first copied them are kept verbatim in
``readme_examples/``: they must keep running whatever the layout under ``actors/`` becomes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
DOCS = sorted(p for p in ROOT.rglob("*.md")
              if not {".venv", ".git", ".pytest_cache"} & set(p.relative_to(ROOT).parts))
BLOCKS = [(doc.relative_to(ROOT), i, block) for doc in DOCS
          for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S))]
# A block that defines pytest tests is a harness: tests/actors/testing runs it under pytest.
SCRIPTS = [(doc, i, block) for doc, i, block in BLOCKS if "def test_" not in block]
FIRST_EXAMPLES = sorted((Path(__file__).parent / "readme_examples").glob("example_*.py"))


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize(("doc", "index", "block"), SCRIPTS,
                         ids=[f"{doc}-{i}" for doc, i, _ in SCRIPTS])
def test_every_python_example_in_the_docs_runs(doc: Path, index: int, block: str) -> None:
    result = run_python(block)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize("path", FIRST_EXAMPLES, ids=lambda p: p.stem)
def test_the_readme_examples_users_first_copied_still_run(path: Path) -> None:
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_readme_is_a_front_page() -> None:
    """At most 300 lines: what it is, the layout near the top, the two commands, one short
    example per front door (blocking, application actor, asyncio, handles), links."""
    assert len(README.splitlines()) <= 300
    assert README.index("## Layout") < README.index("## Two commands")
    examples = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(examples) == 4 and len(FIRST_EXAMPLES) == 6
    assert len(examples[0].strip().splitlines()) <= 15
    for link in re.findall(r"\]\(([^)#]+\.md)\)", README):
        assert (ROOT / link).exists(), link


def test_the_injection_example_is_recorded_by_the_simulator() -> None:
    """The run-loop example sends a transaction with a continue; the simulator records it
    (the same bytes) and the example prints what it saw."""
    [block] = [b for _, _, b in SCRIPTS if "transactions=[my_tx]" in b]
    result = run_python(block)
    assert result.returncode == 0, result.stderr
    assert "simulator recorded 1 injected; the same bytes: True" in result.stdout
    assert "'blocks_executed': " in result.stdout


def test_the_examples_use_the_simulators_timing() -> None:
    """From Python a LocalSimulator session gets the fast keepalive the CLI uses (not the
    45 s deadline meant for a real network), in every example of every doc."""
    calls = [call for _, _, block in SCRIPTS for call in re.findall(
        r"(?:BacktestSession\.(?:start|attach)|spawn_\w+)\((.*?)\)\s*(?:as|$)", block,
        re.S | re.M)]
    assert len(calls) >= 8
    for call in calls:
        assert "timing=sim.timing" in call, call


def test_readme_names_the_defaults_of_scripts_run() -> None:
    """What ``scripts/run`` subscribes to with no flags is written in the README, and is
    what the CLI does (its journal header names the subscriptions)."""
    from protocol.simulator.chain import Chain

    addresses = Chain(0).addresses
    section = README[README.index("With no `--transactions`"):]
    section = section[:section.index("\n\n")]
    for address in addresses[:4]:
        assert f"`{address}`" in section
    assert "`SendContinue(params, reply=future)`" in README and "max_frame_size" in README


def _scripts_run_lines() -> list[list[str]]:
    """The README's ``scripts/run`` commands that need no network, key or file."""
    text = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S)).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] == ["scripts/run"] and not any(
                w.startswith(("--url", "--resume", "--out", "--chaos")) for w in words):
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("args", _scripts_run_lines(), ids=" ".join)
def test_readme_scripts_run_commands_work_as_written(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "actors.cli", "run", *args],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    if "--json" in args:
        assert result.stderr == "" and result.stdout.startswith("{")
