"""Argument types for the project's command lines, written once.

The simulator's command (``python -m protocol.simulator``) and the client's
(``backtest-actors run``, ``sweep``, ``simulator``) take durations and counts;
the client builds on the simulator's options, so the one definition lives here,
below both. A duration is finite and positive: ``inf`` would be a wait with no
bound, which nothing in the project allows.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seconds(text: str) -> float:
    """A duration in seconds: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def int_at_least(minimum: int, what: str = "a number") -> Callable[[str], int]:
    """An integer >= ``minimum``; ``what`` names it in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {value}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse
