"""The sweep driver: supervises sessions the way a session supervises connections.

It keeps ``K`` sessions running on a backend (Ray workers, or threads of
this process) and decides after each one ends, as the session supervisor
does after a lost connection:

* ``completed``: recorded (events counted from its journal);
* ``terminal`` (the server ended it, it expired, its journal is corrupt, a
  gap): recorded as failed with its reason, never retried;
* ``retryable`` or a lost worker: queued again at the front, and the next
  attempt resumes from the session's journal (the cursor's write-ahead
  record) on whichever worker has room, up to ``retries`` times. A journal
  is only ever appended to by one attempt at a time: a session is
  resubmitted only after its previous attempt has reported back (or its
  worker was found dead).

Every wait is bounded (``POLL`` seconds), so the progress display keeps moving
and the loop always sees a lost worker.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

from protocol import ReconnectPolicy, Timing

from ...logs import PENDING_SESSION, SessionLogger
from ...runtime.reconnect_gate import DEFAULT_LEASE
from .job import STATS_KEYS, SessionJob, SessionOutcome
from .plan import PLAN_FILE, SessionSpec, SweepPlan
from .summary import journal_facts, load_summary, write_summary

SWEEP = "(sweep)"  # the session id of records about the sweep as a whole

POLL = 0.2  # seconds the driver waits for an outcome before looking at progress again
DEFAULT_RETRIES = 3
BackendChoice = Literal["auto", "ray", "in-process"]


class Backend(Protocol):
    name: str
    lost_workers: int
    nodes: set[str]  # where its workers ran (complete once it is closed)

    def submit(self, job: SessionJob) -> None: ...

    def wait(self, timeout: float) -> list[SessionOutcome]: ...

    def progress(self) -> list[dict[str, Any]]: ...

    def gate_stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


# Read by Ray when it is imported: "0" makes an embedded Ray use the loopback address
# for all its processes (otherwise it binds the host's routable address).
LOOPBACK_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_available() -> bool:
    """Ray is installed (found without importing it: importing reads its environment)."""
    return importlib.util.find_spec("ray") is not None


def make_backend(choice: BackendChoice, concurrency: int, *, address: str | None = None,
                 workers: int | None = None, lease: float = DEFAULT_LEASE) -> Backend:
    """Ray when asked for or installed (``auto``); this process otherwise."""
    if choice == "ray" or (choice == "auto" and ray_available()):
        if address is None:
            os.environ.setdefault(LOOPBACK_RAY_ENV, "0")
        from .ray_backend import RayBackend

        return RayBackend(concurrency, address=address, workers=workers, lease=lease)
    from .local_backend import LocalBackend

    return LocalBackend(concurrency, lease=lease)


def _absolute(path: str) -> str:
    return os.path.abspath(path)


@attrs.frozen
class SweepConfig:
    plan: SweepPlan
    url: str  # the control URL the sessions use (the embedded simulator's, if embedded)
    api_key: str = attrs.field(repr=False)
    # Absolute: the journals are written by workers whose working directory is not the
    # driver's (a cluster node's, its `ray start`'s), so `--out DIR` must not depend on it.
    out_dir: str = attrs.field(converter=_absolute)
    concurrency: int = 4
    timing: Timing = attrs.field(factory=Timing)
    policy: ReconnectPolicy = attrs.field(factory=ReconnectPolicy)
    backend: BackendChoice = "auto"
    address: str | None = None
    workers: int | None = None
    retries: int = DEFAULT_RETRIES
    lease: float = DEFAULT_LEASE


@attrs.define
class _Record:
    """What the driver knows of one session across its attempts."""

    spec: SessionSpec
    status: str = "pending"  # pending, running, completed, failed
    attempts: int = 0
    resumes: int = 0  # attempts after the first (a retry or a lost worker)
    reasons: list[str] = attrs.field(factory=list)
    reconnects: dict[str, int] = attrs.field(factory=dict)
    stats: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(STATS_KEYS, 0))
    wall: float = 0.0
    session_id: str = ""

    def add(self, outcome: SessionOutcome) -> None:
        for name, count in outcome.reconnects.items():
            self.reconnects[name] = self.reconnects.get(name, 0) + count
        for key, value in outcome.stats.items():
            self.stats[key] = self.stats.get(key, 0) + value
        self.wall += outcome.wall
        self.session_id = outcome.session_id or self.session_id


class Sweep:
    """One sweep run; :meth:`run` returns the summary (also in ``summary.json``)."""

    def __init__(self, config: SweepConfig,
                 on_tick: Callable[[Sweep], None] | None = None) -> None:
        self.config = config
        self.on_tick = on_tick
        self.records = {s.index: _Record(s) for s in config.plan.sessions}
        self.backend: Backend | None = None
        self.started = time.monotonic()
        self.previous_wall = 0.0
        self.running_progress: list[dict[str, Any]] = []
        self.gate_stats: dict[str, int] = {}
        self._facts: dict[int, dict[str, Any]] = {}  # journals of ended sessions, read once
        self._load_previous()

    def journal(self, spec: SessionSpec) -> str:
        return os.path.join(self.config.out_dir, f"{spec.name}.jsonl")

    def _load_previous(self) -> None:
        """A resumed sweep: carry on the counters of the sessions it already ran."""
        previous = load_summary(self.config.out_dir)
        self.previous_wall = float(previous.get("wall_time", 0.0))
        for entry in previous.get("per_session", []):
            record = self.records.get(entry.get("index"))
            if record is None:
                continue
            record.attempts = int(entry.get("attempts", 0))
            record.resumes = int(entry.get("resumes", 0))
            record.reconnects = dict(entry.get("reconnects", {}))
            record.stats.update({k: int(entry.get(k, 0)) for k in STATS_KEYS})
            record.wall = float(entry.get("wall_time", 0.0))
            if entry.get("status") == "failed":
                record.reasons = list(entry.get("reasons", []))

    def run(self) -> dict[str, Any]:
        config = self.config
        os.makedirs(config.out_dir, exist_ok=True)
        plan_path = os.path.join(config.out_dir, PLAN_FILE)
        if not os.path.exists(plan_path):
            with open(plan_path, "w", encoding="utf-8") as f:
                f.write(config.plan.to_json())
        queue: deque[int] = deque()
        for index, record in sorted(self.records.items()):
            if "Completed" in journal_facts(self.journal(record.spec))["events"]:
                record.status = "completed"  # --resume: finished before, skipped
            else:
                queue.append(index)
        self.backend = backend = make_backend(config.backend, config.concurrency,
                                              address=config.address, workers=config.workers,
                                              lease=config.lease)
        SessionLogger("sweep.driver", SWEEP).info(
            "sweep of %d sessions on %s, %d at once", len(queue), backend.name,
            config.concurrency)
        running = 0
        try:
            while queue or running:
                while queue and running < config.concurrency:
                    self._submit(queue.popleft())
                    running += 1
                for outcome in backend.wait(POLL):
                    running -= 1
                    if self._decide(outcome):
                        queue.appendleft(outcome.index)
                    write_summary(config.out_dir, self.summary())
                self.running_progress = backend.progress()
                if self.on_tick is not None:
                    self.on_tick(self)
        finally:
            self.gate_stats = backend.gate_stats()
            backend.close()
        summary = self.summary()
        write_summary(config.out_dir, summary)
        return summary

    def _submit(self, index: int) -> None:
        assert self.backend is not None
        record = self.records[index]
        record.attempts += 1
        record.status = "running"
        config = self.config
        self.backend.submit(SessionJob(
            record.spec, config.url, config.api_key, self.journal(record.spec),
            config.plan.embedded, config.timing, attrs.evolve(config.policy, gate=None),
            config.plan.max_run_ahead, record.attempts))

    def _decide(self, outcome: SessionOutcome) -> bool:
        """Record one attempt's end; True when the session must run again."""
        record = self.records[outcome.index]
        record.add(outcome)
        name = record.spec.name
        if outcome.verdict == "completed":
            record.status = "completed"
            return False
        record.reasons.append(outcome.reason)
        log = SessionLogger("sweep.driver", record.session_id or PENDING_SESSION)
        if outcome.verdict == "retryable" and record.attempts <= self.config.retries:
            record.resumes += 1
            log.warning("%s: %s; resuming from its journal (attempt %d)", name,
                        outcome.reason, record.attempts + 1)
            record.status = "pending"
            return True
        record.status = "failed"
        log.error("%s failed: %s", name, outcome.reason)
        return False

    # --- what the display and summary.json show ------

    def slots_done(self) -> tuple[int, int]:
        """(slots behind finished and running sessions, slots of the whole sweep)."""
        running = {p["index"]: p["done"] for p in self.running_progress}
        done = sum(r.spec.slots if r.status == "completed" else running.get(i, 0)
                   for i, r in self.records.items())
        return done, sum(r.spec.slots for r in self.records.values())

    def counts(self) -> dict[str, int]:
        statuses = [r.status for r in self.records.values()]
        return {"sessions": len(statuses), "completed": statuses.count("completed"),
                "failed": statuses.count("failed"), "running": statuses.count("running")}

    def summary(self) -> dict[str, Any]:
        events: dict[str, int] = {}
        per_session = []
        reconnects = 0
        for index in sorted(self.records):
            record = self.records[index]
            facts = self._facts.get(index) or journal_facts(self.journal(record.spec))
            if record.status in ("completed", "failed"):
                self._facts[index] = facts
            for kind, count in facts["events"].items():
                events[kind] = events.get(kind, 0) + count
            reconnects += sum(record.reconnects.values())
            kinds = facts["events"]
            per_session.append({
                "index": index, "name": record.spec.name,
                "journal": os.path.basename(self.journal(record.spec)),
                "session_id": facts["session_id"] or record.session_id,
                "start_slot": record.spec.start_slot, "end_slot": record.spec.end_slot,
                "status": record.status, "attempts": record.attempts,
                "resumes": record.resumes, "reasons": record.reasons,
                "slots": kinds.get("Slot", 0), "transactions": kinds.get("Transaction", 0),
                "account_diffs": kinds.get("AccountDiff", 0),
                "events": sum(kinds.values()), "reconnects": dict(sorted(
                    record.reconnects.items())),
                "duplicates_delivered": facts["duplicates_delivered"],
                **record.stats, "wall_time": round(record.wall, 3),
                "server": facts["server"]})
        counts = self.counts()
        backend = self.backend
        return {
            "sessions": counts["sessions"], "completed": counts["completed"],
            "failed": [{"index": r.spec.index, "name": r.spec.name,
                        "session_id": r.session_id,
                        "reason": r.reasons[-1] if r.reasons else ""}
                       for r in self.records.values() if r.status == "failed"],
            "events": dict(sorted(events.items())), "reconnects": reconnects,
            "resumes": sum(r.resumes for r in self.records.values()),
            "lost_workers": 0 if backend is None else backend.lost_workers,
            "reconnect_gate": self.gate_stats,
            "backend": "" if backend is None else backend.name,
            "nodes": 0 if backend is None else len(backend.nodes),
            "node_ids": [] if backend is None else sorted(backend.nodes),
            "concurrency": self.config.concurrency,
            "wall_time": round(self.previous_wall + time.monotonic() - self.started, 3),
            "per_session": per_session}
