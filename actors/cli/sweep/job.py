"""One session of a sweep, driven headless to completion into its journal.

The journal is the session's write-ahead record exactly as for ``run --out``
(:mod:`actors.cli.journal`: same writer, same reader, same fsync points), so the
driver can always resume a session from it, on any worker: a journal with a
header and no ``Completed`` is re-attached (:func:`read_journal` rebuilds the
cursor, a torn last line is cut off, new lines are appended); a journal
without a header (the run died before the server named the session) starts
over. Only events *returned* by ``next_event`` are journaled, so a worker
killed at any point leaves a journal that the next attempt continues without
a duplicated or a missing line.

The outcome tells the driver what to do next: ``completed``; ``retryable``
(the session may go on elsewhere from its journal: a reconnect budget spent,
an internal error, a worker asked to stop, or a session *stalled*: no event at
all for ``Timing.handshake`` seconds, which bounds the wait for a session
that is stuck for any reason); ``terminal`` (it never can: the
server ended it, it expired, the journal is corrupt, a gap).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import IO, Any, Literal

import attrs

from protocol import (
    ContinueParams,
    ContinueToParams,
    CreateSession,
    ReconnectGate,
    ReconnectPolicy,
    Timing,
)

from ...events import (
    ConnectionChanged,
    ContinueLost,
    Gap,
    ManagedEvent,
    ManagedSessionError,
    Reconnecting,
    Slot,
    Status,
)
from ...frontdoors.blocking import ManagedBacktestSession
from ...frontdoors.drive import AnyContinue, Drive
from ...logs import SessionLogger
from ..journal import JournalError, JournalHeader, JournalWriter, read_journal
from .plan import SessionSpec

# How long one wait for an event may last before the job looks at its stop flag.
POLL = 0.25
Verdict = Literal["completed", "retryable", "terminal"]
STATS_KEYS = ("duplicates_dropped", "malformed_frames", "lost_continues", "continues_resent",
              "double_advances", "gaps")


@attrs.frozen
class SessionJob:
    """Everything a worker needs to run (or resume) one session; picklable."""

    spec: SessionSpec
    url: str
    api_key: str = attrs.field(repr=False)  # never logged
    journal: str
    embedded: bool
    timing: Timing
    policy: ReconnectPolicy  # without a gate: the worker adds its own
    max_run_ahead: int = 80
    attempt: int = 1


@attrs.frozen
class SessionOutcome:
    index: int
    verdict: Verdict
    reason: str = ""
    session_id: str = ""
    # Counters of this attempt only (a resumed session adds up its attempts).
    reconnects: dict[str, int] = attrs.field(factory=dict)
    stats: dict[str, int] = attrs.field(factory=dict)
    wall: float = 0.0


@attrs.define
class Progress:
    """What the live display shows about a running session (read from other threads)."""

    index: int
    total: int
    session_id: str = ""
    done: int = 0  # slots of the range behind the last Slot event
    events: int = 0
    reconnects: int = 0
    stage: str = "starting"
    attempt: int = 1
    links: dict[str, str] = attrs.field(factory=dict)  # connection -> its last status

    def snapshot(self) -> dict[str, Any]:
        return attrs.asdict(self)


def run_job(job: SessionJob, gate: ReconnectGate | None, progress: Progress,
            stop: threading.Event, sessions: dict[int, Any] | None = None) -> SessionOutcome:
    """Run ``job`` until its session completes, fails, or ``stop`` is set; while it
    runs, ``sessions[index]`` is its session (for :meth:`SessionWorker.session_stats`)."""
    runner = _Job(job, gate, progress, stop)
    runner.registry = sessions
    return runner.run()


class _Job:
    def __init__(self, job: SessionJob, gate: ReconnectGate | None, progress: Progress,
                 stop: threading.Event) -> None:
        self.job, self.progress, self.stop = job, progress, stop
        self.policy = attrs.evolve(job.policy, gate=gate)
        self.log = SessionLogger("sweep")
        self.out: IO[str] | None = None
        self.writer: JournalWriter | None = None
        self.session: ManagedBacktestSession | None = None
        self.completed = False
        self.registry: dict[int, Any] | None = None

    def run(self) -> SessionOutcome:
        started = time.monotonic()
        try:
            outcome = self._run()
        except JournalError as exc:
            outcome = self._outcome("terminal", f"journal: {exc}")
        except ManagedSessionError as exc:
            outcome = self._outcome(_verdict(exc), str(exc))
        except OSError as exc:
            outcome = self._outcome("retryable", f"journal: {exc}")
        finally:
            stats = self._close()
        return attrs.evolve(outcome, reconnects=stats.pop("reconnects", {}), stats=stats,
                            wall=time.monotonic() - started)

    def _outcome(self, verdict: Verdict, reason: str = "") -> SessionOutcome:
        self.completed = verdict == "completed"
        if verdict != "completed":
            self.log.warning("%s %s: %s", self.job.spec.name, verdict, reason)
        return SessionOutcome(self.job.spec.index, verdict, reason, self.progress.session_id)

    def _run(self) -> SessionOutcome:
        job = self.job
        common: dict[str, Any] = {"timing": job.timing, "policy": self.policy,
                                  "max_run_ahead": job.max_run_ahead}
        awaiting = False
        state = self._journal_state()
        if state is not None:
            if state.completed:
                self.progress.session_id = state.header.session_id
                self.progress.done = job.spec.slots
                return self._outcome("completed")
            self.log.session_id = self.progress.session_id = state.header.session_id
            self.progress.stage = "attaching"
            session = self.session = ManagedBacktestSession.attach(
                job.url, job.api_key, state.cursor, **common)
            out = self.out = open(job.journal, "r+", encoding="utf-8")  # noqa: SIM115
            out.truncate(state.valid_bytes)  # a torn last line is cut off, then appended to
            out.seek(0, os.SEEK_END)
            self.writer = JournalWriter(out)
            awaiting = state.awaiting_continue
        else:
            spec = job.spec
            session = self.session = ManagedBacktestSession.start(
                job.url, job.api_key, CreateSession(spec.start_slot, spec.end_slot), **common)
            info = session.session_info
            self.log.session_id = self.progress.session_id = info.session_id
            self.out = open(job.journal, "w", encoding="utf-8")  # noqa: SIM115
            self.writer = JournalWriter(self.out)
            self.writer.header(JournalHeader(
                job.url, info.session_id, info.rpc_endpoint, spec.start_slot, spec.end_slot,
                spec.transactions, spec.account_diffs, spec.advance, job.embedded))
            if spec.transactions:
                session.subscribe_transactions(spec.transactions)
            if spec.account_diffs:
                session.subscribe_account_diffs(spec.account_diffs)
        if self.registry is not None:
            self.registry[job.spec.index] = session
        drive = _SweepDrive(self, session)
        if awaiting:
            drive.continue_with(drive.default)  # the last attempt died before its continue
        return self._drive(drive)

    def _journal_state(self) -> Any:
        try:
            if os.path.getsize(self.job.journal) == 0:
                return None
        except FileNotFoundError:
            return None
        try:
            return read_journal(self.job.journal, allow_embedded=self.job.embedded)
        except JournalError as exc:
            if "no header" in str(exc) and "empty" in str(exc):
                return None  # died before the session was named: start over
            raise

    def _drive(self, drive: _SweepDrive) -> SessionOutcome:
        self.progress.stage = "running"
        try:
            completed = drive.run()
        except _Finished as finished:
            return finished.outcome
        if completed is None:
            return self._outcome("retryable", "the worker was asked to stop")
        self.progress.done, self.progress.stage = self.job.spec.slots, "completed"
        return self._outcome("completed")

    def _count(self, event: ManagedEvent) -> None:
        progress = self.progress
        progress.events += 1
        if isinstance(event, Slot):
            progress.done = event.slot - self.job.spec.start_slot + 1
            progress.stage = f"slot {event.slot}"
        elif isinstance(event, Status):
            progress.stage = event.stage
        elif isinstance(event, ConnectionChanged):
            progress.links[event.name] = type(event.status).__name__
            if isinstance(event.status, Reconnecting):
                progress.reconnects += 1

    def _close(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        session = self.session
        if session is not None:
            try:
                raw = session.stats()
                stats = {k: int(raw.get(k, 0)) for k in STATS_KEYS}
                stats["reconnects"] = dict(raw.get("reconnects", {}))
            except ManagedSessionError:
                pass
            # Detach: an unfinished session stays on the server for the next attempt.
            session.shutdown(detach=not self.completed)
        if self.writer is not None:
            self.writer.sync()
        if self.out is not None:
            self.out.close()
        return stats


class _Finished(Exception):
    """Ends a sweep session's loop with an outcome other than Completed."""

    def __init__(self, outcome: SessionOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class _SweepDrive(Drive):
    """A sweep session's loop: every event journaled, each continue written ahead, and
    short waits, so that the worker can be stopped and a stalled session noticed."""

    def __init__(self, job: _Job, session: ManagedBacktestSession) -> None:
        super().__init__(session, job.job.spec.advance, timeout=POLL)
        self._job = job
        self._last = time.monotonic()
        assert job.writer is not None
        self._writer = job.writer

    def stopped(self) -> bool:
        return self._job.stop.is_set()

    def idle(self, quiet: TimeoutError) -> None:
        stall = self._job.job.timing.handshake
        if time.monotonic() - self._last > stall:
            # Nothing at all (not even a reconnect) for a whole handshake bound: the
            # session is stuck; a fresh attach from the journal gets it going.
            raise _Finished(self._job._outcome(
                "retryable", f"stalled: no event for {stall:.0f}s "
                f"(continue {self.session.stats()['continue_state']})"))

    def event(self, event: ManagedEvent) -> ContinueParams | None:
        self._last = time.monotonic()
        self._writer.event(event, self.session.delivered_seq)
        self._job._count(event)
        if isinstance(event, Gap):
            raise _Finished(self._job._outcome(
                "terminal", f"gap on {event.stream}: slots {event.first_slot}..="
                f"{event.last_slot} lost"))
        return None

    def before_continue(self, params: AnyContinue) -> None:
        self._writer.continue_sent(params, self.session.delivered_seq)  # write-ahead

    def send_continue(self, params: AnyContinue) -> None:
        try:
            # Handed over at once; written when every link is up. Not waited for longer:
            # the events of an outage must keep flowing to the journal and the display.
            if isinstance(params, ContinueToParams):
                self.session.send_continue_to(params, timeout=POLL)
            else:
                self.session.send_continue(params, timeout=POLL)
        except TimeoutError:
            pass

    def lost(self, event: ContinueLost, params: AnyContinue | None) -> None:
        raise _Finished(self._job._outcome("retryable", "a continue was lost in flight"))


def _verdict(exc: ManagedSessionError) -> Verdict:
    """A session that may go on from its journal elsewhere, or one that never can."""
    reason = str(exc)
    if "budget spent" in reason:
        return "retryable"  # the server or the network was away for too long
    if exc.kind == "attach" or "rejected" in reason or "server error" in reason:
        return "terminal"  # expired, unknown, another key, refused, or ended by the server
    return "retryable"


logging.getLogger("backtest_actors.sweep").addHandler(logging.NullHandler())
