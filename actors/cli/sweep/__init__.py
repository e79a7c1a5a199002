"""Sweeps: many backtest sessions at once, on Ray or in this process (actors/DESIGN.md §10).

:class:`Sweep` (``driver.py``) supervises sessions the way a session
supervises connections; ``job.py`` runs one session into its journal;
``worker.py`` hosts sessions (``ray_backend.py`` makes workers Ray actors,
``local_backend.py`` keeps them in this process); ``plan.py`` reads flags and
sweep files; ``summary.py`` writes ``summary.json``; ``cli.py`` is the
``backtest-actors sweep`` command.
"""

from .driver import Sweep, SweepConfig, make_backend, ray_available
from .job import SessionJob, SessionOutcome
from .plan import PlanError, SessionSpec, SweepPlan, read_sweep_file

__all__ = ["PlanError", "SessionJob", "SessionOutcome", "SessionSpec", "Sweep", "SweepConfig",
           "SweepPlan", "make_backend", "ray_available", "read_sweep_file"]
