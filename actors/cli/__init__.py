"""``backtest-actors``: the command line (``run``, ``sweep``, ``simulator``).

:mod:`.parser` reads the arguments; a run is checked in :mod:`.plan`, driven in
:mod:`.run` (journal: :mod:`.journal`, progress: :mod:`.progress`); a sweep of
many sessions is :mod:`.sweep`.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
