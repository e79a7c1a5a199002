"""Ray processes that a killed sweep left behind, found and ended by the next sweep.

An embedded Ray is a tree of processes under the sweep's driver (GCS, raylet,
agents, workers). A clean end (``ray.shutdown``) stops them all; a driver killed
with SIGKILL cannot, and some of Ray's processes (its agents) outlive it. So the
driver writes down the processes of the Ray it started, and every sweep first
ends the processes of records whose driver is gone. A record names each
process by pid *and* start time, so a pid that the system has since given to
another program is never touched, and a record whose driver still runs (another
sweep, right now) is left alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import psutil

from ...logs import SessionLogger

RECORDS_DIR = os.path.join(tempfile.gettempdir(), "backtest-actors-ray")
KILL_WAIT = 5.0  # seconds for a killed process to be reaped before it is reported


def record_embedded_ray() -> str:
    """Write down this driver and every process under it (the Ray it started); the
    record's path, for :func:`forget`."""
    me = psutil.Process()
    entry = {"driver": _identity(me),
             "processes": [_identity(p) for p in me.children(recursive=True)]}
    os.makedirs(RECORDS_DIR, exist_ok=True)
    path = os.path.join(RECORDS_DIR, f"{me.pid}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entry, f)
    os.replace(tmp, path)
    return path


def forget(path: str) -> None:
    """The Ray of this record was shut down cleanly: nothing to end later."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def end_leftovers() -> int:
    """End the processes of every record whose driver is gone; how many were ended."""
    try:
        names = os.listdir(RECORDS_DIR)
    except FileNotFoundError:
        return 0
    log = SessionLogger("sweep.ray", "(sweep)")
    ended = 0
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(RECORDS_DIR, name)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
            driver = entry["driver"]
            listed = [p for p in entry["processes"] if isinstance(p, dict)]
        except (OSError, ValueError, KeyError, TypeError):
            forget(path)  # torn or foreign: nothing it names can be trusted
            continue
        if _running(driver) is not None:
            continue  # its sweep is still running
        alive = [p for p in (_running(entry) for entry in listed) if p is not None]
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(alive, timeout=KILL_WAIT)
        ended += len(alive) - len(still)
        if alive:
            log.warning("ended %d Ray process(es) left behind by a sweep that was killed "
                        "(driver pid %s)%s", len(alive) - len(still), driver.get("pid"),
                        f"; {len(still)} did not end" if still else "")
        forget(path)
    return ended


def _identity(process: psutil.Process) -> dict[str, Any]:
    return {"pid": process.pid, "started": process.create_time()}


def _running(identity: Any) -> psutil.Process | None:
    """The process ``identity`` names, if it still runs (same pid, same start time)."""
    try:
        process = psutil.Process(int(identity["pid"]))
        if abs(process.create_time() - float(identity["started"])) > 0.01:
            return None  # the pid was given to another process since
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
