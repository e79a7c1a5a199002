"""One parser for durations and counts on every command line of the project; a duration
is finite and positive everywhere (the simulator's once accepted ``inf``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import build_parser
from protocol.simulator.arguments import int_at_least, seconds

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("text", ["0", "-1", "inf", "-inf", "nan", "soon", ""])
def test_a_duration_is_a_finite_number_above_zero(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected seconds"):
        seconds(text)


def test_good_durations_and_counts_pass() -> None:
    assert seconds("0.25") == 0.25 and seconds("1e3") == 1000.0
    assert int_at_least(0)("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="expected a slot number >= 1"):
        int_at_least(1, "a slot number")("0")


@pytest.mark.parametrize("argv", [
    ["run", "--continue-quiet", "inf"],
    ["sweep", "--continue-quiet", "inf"],
    ["simulator", "--keepalive-deadline", "inf"],
])
def test_every_command_refuses_an_endless_duration(argv: list[str]) -> None:
    with pytest.raises(Exception, match="expected seconds > 0, got 'inf'"):
        build_parser().parse_args(argv)


def test_the_standalone_simulator_refuses_it_too() -> None:
    result = subprocess.run([sys.executable, "-m", "protocol.simulator", "--stall-timeout",
                             "inf"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "expected seconds > 0, got 'inf'" in result.stderr
