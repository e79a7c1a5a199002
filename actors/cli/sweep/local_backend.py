"""The in-process backend: every session of the sweep on a thread of this process.

Used when Ray is not installed (or with ``--no-ray``). The driver's
supervision is the same (:mod:`actors.cli.sweep.driver`); only the distribution
differs: one :class:`~actors.cli.sweep.worker.SessionWorker` runs ``K`` sessions
on a thread pool, and the reconnect gate is a
:class:`~actors.runtime.reconnect_gate.LocalReconnectGate`. A worker cannot be lost here: the
process is the worker, and ``--resume DIR`` is what survives its death.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from ...runtime.reconnect_gate import DEFAULT_LEASE, LocalReconnectGate
from .job import SessionJob, SessionOutcome
from .worker import SessionWorker


class LocalBackend:
    name = "in-process"

    def __init__(self, concurrency: int, *, lease: float = DEFAULT_LEASE) -> None:
        self.gate = LocalReconnectGate(concurrency, lease=lease)
        self.worker = SessionWorker(0, self.gate)
        self.lost_workers = 0
        self.nodes = {"this process"}
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="sweep-session")
        self._futures: dict[Future[SessionOutcome], int] = {}

    def submit(self, job: SessionJob) -> None:
        self._futures[self._pool.submit(self.worker.run, job)] = job.spec.index

    def wait(self, timeout: float) -> list[SessionOutcome]:
        if not self._futures:
            return []
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        outcomes = []
        for future in done:
            index = self._futures.pop(future)
            try:
                outcomes.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a bug in a job: retry it elsewhere
                outcomes.append(SessionOutcome(index, "retryable", f"worker error: {exc!r}"))
        return outcomes

    def progress(self) -> list[dict[str, Any]]:
        return self.worker.progress()

    def gate_stats(self) -> dict[str, int]:
        return self.gate.stats()

    def close(self) -> None:
        self.worker.stop()  # sessions still running detach and return
        self._pool.shutdown(wait=True)
        self.gate.close()
