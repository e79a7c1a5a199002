"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_readme_has_the_examples() -> None:
    # blocking, run loop with injection, application actor, asyncio, handles, resume
    assert len(BLOCKS) == 6
    assert len(BLOCKS[0].strip().splitlines()) <= 15


def test_readme_injection_example_is_recorded_by_the_simulator() -> None:
    """The README's transaction-injection example sends a transaction with a continue;
    the simulator records it (the same bytes) and the example prints what it saw."""
    block = next(b for b in BLOCKS if "transactions=[my_tx]" in b)
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "simulator recorded 1 injected; the same bytes: True" in result.stdout
    assert "'blocks_executed': " in result.stdout


def test_readme_examples_use_the_simulators_timing() -> None:
    """From Python a LocalSimulator session gets the fast keepalive the CLI uses, as the
    README shows it (not the 45 s deadline meant for a real network)."""
    calls = [call for block in BLOCKS for call in re.findall(
        r"(?:BacktestSession\.(?:start|attach)|spawn_\w+)\((.*?)\)\s*(?:as|$)", block,
        re.S | re.M)]
    assert len(calls) == 8
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
                            capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    if "--json" in args:
        assert result.stderr == "" and result.stdout.startswith("{")
