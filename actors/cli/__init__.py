"""``backtest-actors``: the command line (``run``, ``sweep``, ``simulator``)."""

from .run import build_parser, main

__all__ = ["build_parser", "main"]
