"""The run's progress on stderr: a live line on a terminal (rich), plain lines in a pipe."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from .run import Run

WIDE = 110  # terminal columns from which the live line also shows the stage and events
PLAIN_PROGRESS_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal


class NoProgress:
    """``--quiet`` and ``--json``: nothing on stderr while the run goes."""

    def __enter__(self) -> Any:
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


class LiveProgress:
    """A rich progress line on a terminal."""

    def __init__(self, run: Run, session_id: str) -> None:
        self.run = run
        # One line that fits the terminal: below WIDE columns the bar is short and the
        # stage and event count (the least needed) are left out, instead of rich cutting
        # every column down to an ellipsis.
        wide = run.console.width >= WIDE
        detail = (TextColumn("{task.fields[stage]} · {task.fields[events]} events · "
                             "{task.fields[reconnects]} reconnects") if wide else
                  TextColumn("{task.fields[reconnects]} reconnects"))
        self.progress = Progress(
            TextColumn("[bold]{task.fields[sid]}"), BarColumn(bar_width=None if wide else 10),
            TextColumn("{task.completed}/{task.total} slots {task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rate]:.0f}/s"), TimeRemainingColumn(), detail,
            console=run.console, transient=False)
        self.task = self.progress.add_task("run", total=run.total, sid=f"…{session_id[-8:]}",
                                           rate=0.0, stage="starting", events=0, reconnects=0)
        self.started = time.monotonic()

    def __enter__(self) -> Any:
        self.progress.start()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.update()
        self.progress.stop()

    def update(self) -> None:
        run = self.run
        done = run._done()
        elapsed = max(1e-6, time.monotonic() - self.started)
        stage = run.stage if run.last_slot is None else f"slot {run.last_slot}"
        if run.discover:
            stage = f"{stage} {run.counts['pauses']}p"
        self.progress.update(self.task, completed=done, rate=done / elapsed, stage=stage,
                             events=run.counts["events"], reconnects=run.counts["reconnects"])


class PlainProgress:
    """Periodic plain lines (no carriage returns) when stderr is a pipe or a file."""

    def __init__(self, run: Run, session_id: str) -> None:
        self.run = run
        self.session_tail = session_id[-8:]
        self.started = self.last = time.monotonic()

    def __enter__(self) -> Any:
        return self.update

    def __exit__(self, *exc: object) -> None:
        self._line()

    def update(self) -> None:
        if time.monotonic() - self.last >= PLAIN_PROGRESS_EVERY:
            self._line()

    def _line(self) -> None:
        run = self.run
        self.last = now = time.monotonic()
        done = run._done()
        rate = done / max(1e-6, now - self.started)
        eta = f"{(run.total - done) / rate:.0f}s" if rate > 0 else "unknown"
        stage = run.stage if run.last_slot is None else f"slot {run.last_slot}"
        pauses = f", {run.counts['pauses']} pauses" if run.discover else ""
        sys.stderr.write(
            f"progress …{self.session_tail}: {done}/{run.total} slots "
            f"({100 * done / run.total:.1f}%), {rate:.1f} slots/s, ETA {eta}, {stage}, "
            f"{run.counts['events']} events, {run.counts['reconnects']} reconnects"
            f"{pauses}\n")
        sys.stderr.flush()

