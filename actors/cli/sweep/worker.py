"""SessionWorker: hosts sessions of a sweep, each on its own thread.

The same class serves both backends: the in-process backend keeps one and
calls :meth:`SessionWorker.run` from a thread pool; the Ray backend turns it
into a Ray actor (:mod:`actors.cli.sweep.ray_backend`: a threaded actor, so
``run`` calls for several sessions and ``progress`` polls run side by side).
A worker holds no state the driver needs: a session's state is its journal,
so a worker that dies loses nothing but the sessions' connections.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from protocol import ReconnectGate

from .job import Progress, SessionJob, SessionOutcome, run_job


class SessionWorker:
    def __init__(self, worker_id: int, gate: ReconnectGate | None) -> None:
        self.worker_id = worker_id
        self._gate = gate
        self._running: dict[int, Progress] = {}
        self._sessions: dict[int, Any] = {}  # index -> its ManagedBacktestSession
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, job: SessionJob) -> SessionOutcome:
        progress = Progress(job.spec.index, job.spec.slots, attempt=job.attempt)
        with self._lock:
            self._running[job.spec.index] = progress
        try:
            return run_job(job, self._gate, progress, self._stop, self._sessions)
        finally:
            with self._lock:
                self._running.pop(job.spec.index, None)
                self._sessions.pop(job.spec.index, None)

    def progress(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.snapshot() for p in self._running.values()]

    def session_stats(self) -> dict[int, dict[str, Any]]:
        """``stats()`` and link status of each running session (to look inside a stuck one)."""
        out = {}
        for index, session in list(self._sessions.items()):
            try:
                out[index] = {**session.stats().as_dict(), "status": {
                    k: repr(v) for k, v in session.status().items()}}
            except Exception as exc:  # noqa: BLE001 - a session ending meanwhile
                out[index] = {"error": repr(exc)}
        return out

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        """Running sessions detach (they stay on the server) and return ``retryable``."""
        self._stop.set()
