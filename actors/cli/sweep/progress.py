"""Live progress of a sweep: a rich table on a terminal, plain lines in a pipe.

On a terminal, one line per running session (range, slots done, stage,
events, reconnects, attempt) under a total line (sessions done/total, slots/s,
ETA, reconnects, failures), redrawn in place. In a pipe or a file, the total
line alone every :data:`PLAIN_EVERY` seconds, without carriage returns, so a
CI log stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .driver import Sweep

PLAIN_EVERY = 2.0


def total_line(sweep: Sweep) -> str:
    counts = sweep.counts()
    done, total = sweep.slots_done()
    elapsed = max(1e-6, time.monotonic() - sweep.started)
    rate = done / elapsed
    eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
    reconnects = sum(p["reconnects"] for p in sweep.running_progress) + sum(
        sum(r.reconnects.values()) for r in sweep.records.values())
    return (f"sweep: {counts['completed']}/{counts['sessions']} sessions done, "
            f"{counts['running']} running, {done}/{total} slots, {rate:.0f} slots/s, "
            f"ETA {eta}, {reconnects} reconnects, {counts['failed']} failed")


class PlainProgress:
    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, sweep: Sweep) -> None:
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            sys.stderr.write(total_line(sweep) + "\n")
            sys.stderr.flush()

    def close(self, sweep: Sweep) -> None:
        sys.stderr.write(total_line(sweep) + "\n")
        sys.stderr.flush()


class LiveProgress:
    def __init__(self, console: Console) -> None:
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.live.start()

    def __call__(self, sweep: Sweep) -> None:
        self.live.update(self._table(sweep), refresh=True)

    def close(self, sweep: Sweep) -> None:
        self.live.update(self._table(sweep), refresh=True)
        self.live.stop()

    @staticmethod
    def _table(sweep: Sweep) -> Group:
        table = Table(box=None)
        for column in ("session", "id", "slots", "stage", "events", "reconnects", "attempt"):
            table.add_column(column, justify="left" if column in ("session", "id", "stage")
                             else "right")
        rows: list[dict[str, Any]] = sorted(sweep.running_progress, key=lambda p: p["index"])
        for p in rows:
            spec = sweep.records[p["index"]].spec
            table.add_row(spec.name, f"…{p['session_id'][-8:]}" if p["session_id"] else "",
                          f"{p['done']}/{p['total']} ({100 * p['done'] / p['total']:.0f}%)",
                          str(p["stage"]), str(p["events"]), str(p["reconnects"]),
                          str(p["attempt"]))
        return Group(table, Text(total_line(sweep), style="bold"))


def progress_for(console: Console) -> PlainProgress | LiveProgress:
    return LiveProgress(console) if console.is_terminal else PlainProgress()
