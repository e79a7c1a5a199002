"""The command line's help and the simulator's addresses, as a user reads them."""

from __future__ import annotations

import subprocess

import pytest

from actors.cli import build_parser
from protocol.simulator.chain import Chain
from tests.actors.cli.test_run import COMMAND, ENV


def test_help_names_blocks_and_every_simulator_option_is_explained() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    run_parser = sub.choices["run"]  # type: ignore[attr-defined]
    advance = next(a for a in run_parser._actions if a.dest == "advance")  # noqa: SLF001
    assert advance.help is not None and "produced blocks" in advance.help
    simulator = sub.choices["simulator"]  # type: ignore[attr-defined]
    options = [a for a in simulator._actions if a.option_strings]  # noqa: SLF001
    assert len(options) >= 10
    for action in options:
        assert action.help, action.option_strings


@pytest.mark.parametrize("command", [[*COMMAND, "simulator"],
                                     [*COMMAND[:-1], "protocol.simulator"]])
def test_list_addresses(command: list[str]) -> None:
    result = subprocess.run([*command, "--list-addresses", "--seed", "3"], capture_output=True,
                            text=True, timeout=20, env=ENV)
    assert result.returncode == 0
    assert tuple(result.stdout.split()) == Chain(3).addresses
    assert result.stderr == ("seed 3: slots 400000000..=400001999\n"
                             "programs (for run --discover), most invoked first: "
                             f"{' '.join(Chain(3).programs)}\n")


def test_the_simulator_logs_its_addresses_at_start_up() -> None:
    proc = subprocess.Popen([*COMMAND, "simulator", "--port", "0", "--seed", "4"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or "addresses (seed" not in lines[-1]:  # bounded by pytest-timeout
            line = proc.stderr.readline()
            assert line, lines
            lines.append(line)
        assert any("serving ws://" in line for line in lines[:-1])
        assert lines[-1].rstrip().endswith(f"addresses (seed 4): {' '.join(Chain(4).addresses)}")
    finally:
        proc.terminate()
        proc.wait(10)
