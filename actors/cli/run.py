"""One run of ``backtest-actors run``: a session driven to completion, journaled.

The loop is the library's :class:`~actors.frontdoors.drive.Drive`; this module
adds what the command line does around it: every event counted and written to
the journal, each continue written ahead, Ctrl-C handled in two steps (the
first closes cleanly and prints the summary, the second exits at once).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from protocol import CreateSession, ReconnectPolicy, Timing, backtest_ws_url
from protocol.codec import dump_document
from protocol.pubsub import PUBSUB_BUFFER_SLOTS
from protocol.simulator import Expected, LocalSimulator

from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import (
    AccountDiff,
    ActionResult,
    ConnectionChanged,
    ContinueLost,
    DiscoveryBatch,
    Error,
    Gap,
    ManagedEvent,
    ManagedSessionError,
    Paused,
    Reconnecting,
    Slot,
    Status,
    Transaction,
)
from ..frontdoors.blocking import ManagedBacktestSession
from ..frontdoors.drive import AnyContinue, Drive
from ..stats import SessionStats
from ..testing.delivery import Delivery, differences
from .journal import JournalHeader, JournalState, JournalWriter
from .progress import LiveProgress, NoProgress, PlainProgress

DUPLICATE_HORIZON = 2 * PUBSUB_BUFFER_SLOTS
# Exit code of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130
# Server errors that mean the range itself is wrong: the same rule as a bad argument.
RANGE_ERRORS = ("bundleNotFound", "noProducedBlocksInRange")


class Run:
    """One session, driven to completion, with progress and a summary."""

    def __init__(self, console: Console, url: str, api_key: str, create: CreateSession,
                 timing: Timing, policy: ReconnectPolicy, tx_addrs: list[str],
                 diff_addrs: list[str], advance: int, out: IO[str] | None,
                 chaos: LocalSimulator | None, seed: int, *,
                 max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
                 on_lost_continue: LostContinuePolicy = "resend", embedded: bool = False,
                 resume: JournalState | None = None, resume_path: str | None = None,
                 quiet: bool = False, json_summary: bool = False,
                 expected: Expected | None = None,
                 knobs: dict[str, float] | None = None,
                 start_timeout: float | None = None, inject: tuple[str, ...] = (),
                 opener: Callable[[], ManagedBacktestSession] | None = None,
                 report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.console = console
        # A sub-session of run --parallel: opened by the parallel run (``opener``), and
        # its summary handed back (``report``) instead of printed.
        self.opener, self.report = opener, report
        # Precise stepping (--discover): pause before each announced batch; --inject
        # goes with each request that leaves a pause.
        self.discover = bool(create.discoveries)
        self.inject = inject
        # The embedded simulator knows what a complete run delivers: the run checks it.
        self.expected = expected
        self.knobs = knobs or {}  # the flaky-link flags, kept in the journal's header
        self.start_timeout = start_timeout
        self._busy_seen = False  # an attach met another owner: a later "not found" is its doing
        self.delivered = Delivery([], [], [])
        self.differences: list[str] | None = None  # None: not checked (not embedded, or not done)
        self.quiet, self.json_summary = quiet, json_summary
        # Ctrl-C: the first asks for a clean stop (summary, exit 130), a second exits
        # at once. The handler interrupts only a wait (``_waiting``), never a journal write.
        self.interrupted = False
        self._waiting = False
        self.embedded, self.resume, self.resume_path = embedded, resume, resume_path
        self.journal = None if out is None else JournalWriter(out)
        self.session: ManagedBacktestSession | None = None
        self.max_run_ahead, self.on_lost_continue = max_run_ahead, on_lost_continue
        self.gaps: list[Gap] = []
        self.lost_continues: list[ContinueLost] = []
        self.url, self.api_key, self.create = url, api_key, create
        self.timing, self.policy = timing, policy
        self.tx_addrs, self.diff_addrs = tx_addrs, diff_addrs
        self.advance, self.out, self.chaos, self.seed = advance, out, chaos, seed
        self.total = create.end_slot - create.start_slot + 1
        self.counts = {"events": 0, "slots": 0, "transactions": 0, "account_diffs": 0,
                       "errors": 0, "reconnects": 0, "duplicates_delivered": 0,
                       "discoveries": 0, "pauses": 0, "actions": 0}
        if resume is not None:  # the whole session: what the runs before journaled too
            history = resume.history
            self.counts.update(events=sum(history.values()), slots=history.get("Slot", 0),
                               transactions=history.get("Transaction", 0),
                               account_diffs=history.get("AccountDiff", 0),
                               errors=history.get("Error", 0),
                               discoveries=history.get("DiscoveryBatch", 0),
                               pauses=history.get("Paused", 0),
                               actions=history.get("ActionResult", 0))
        # Items seen per slot, kept for the last DUPLICATE_HORIZON slots: a replayed
        # duplicate can only come from within the server's replay buffer.
        self.seen: dict[int, set[Any]] = {}
        self.stage = "connecting"
        self.last_slot: int | None = None
        self.summary: dict[str, Any] | None = None
        self.completed = False

    def run(self) -> int:
        started = time.monotonic()
        previous = self._install_interrupt_handler()
        try:
            return self._run(started)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous)

    def _install_interrupt_handler(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return signal.getsignal(signal.SIGINT)  # signals reach the main thread only
        return signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: stop cleanly (the wait under way is interrupted; nothing is
        lost, see ``next_event``). Second: exit now; the journal is flushed line by line,
        so it is complete up to the last event written."""
        if self.interrupted:
            sys.stderr.write("backtest-actors run: interrupted again: exiting now\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        self.interrupted = True
        if not self.quiet:
            sys.stderr.write("backtest-actors run: interrupted: closing the session "
                             "(Ctrl-C again to exit at once)\n")
            sys.stderr.flush()
        if self._waiting:
            raise KeyboardInterrupt

    def _wait(self, call: Callable[[], Any]) -> Any:
        """Run a blocking session call where a Ctrl-C may interrupt it."""
        if self.interrupted:
            raise KeyboardInterrupt
        self._waiting = True
        try:
            return call()
        finally:
            self._waiting = False

    def _run(self, started: float) -> int:
        try:
            session = self._wait(self._open)
        except KeyboardInterrupt:
            sys.stderr.write("backtest-actors run: interrupted before the session existed\n")
            return EXIT_INTERRUPTED
        except ManagedSessionError as exc:
            return self._not_opened(exc)
        except OSError as exc:
            sys.stderr.write(f"backtest-actors run: --resume: {exc}\n")
            return 1
        self.session = session
        failure: ManagedSessionError | None = None
        try:
            if self.resume is None:
                self._header(session)
                if self.tx_addrs:
                    session.subscribe_transactions(self.tx_addrs)
                if self.diff_addrs:
                    session.subscribe_account_diffs(self.diff_addrs)
                if self.create.actions:
                    session.subscribe_actions()
                if not self.tx_addrs and not self.diff_addrs and not self.quiet:
                    self.console.print("note: no --transactions and no --account-diffs: this "
                                       "run delivers slots and statuses only",
                                       highlight=False, soft_wrap=True)
            if (self.resume is not None and self.resume.cursor.pending_continue is not None
                    and not self.quiet):
                # The lost-continue rule may keep the run quiet this long: say why at once.
                self.console.print(
                    f"resume: waiting up to {self.timing.quiet_window:g} s for the server to "
                    f"confirm the last continue (it was sent before the run stopped)",
                    highlight=False, soft_wrap=True)
            drive = _JournaledDrive(self, session)
            if self.resume is not None and drive.stepping is not None:
                drive.stepping = self.resume.stepping  # what the runs before were told
            if self.resume is not None and self.resume.awaiting_continue:
                # It died between a rest and the request that leaves it.
                drive.continue_with(drive.next_step(self.resume.stepping.paused_at is not None))
            if self.chaos is not None:
                self._schedule_chaos(session.session_info.session_id)
            with self._progress(session.session_info.session_id) as update:
                drive.update = update
                completed = drive.run()
                assert completed is not None  # never stopped: Ctrl-C raises instead
                self.summary, self.completed = completed.summary, True
                if self.expected is not None:
                    self.differences = differences(self.delivered, self.expected)
                update()
        except ManagedSessionError as exc:
            failure = exc
        except KeyboardInterrupt:
            self.interrupted = True
        stats = self._stats_or_none(session)
        session.shutdown()
        if self.journal is not None:
            self.journal.sync()
        if self.resume is not None and self.out is not None:
            self.out.close()
        self._print_summary(session.session_info.session_id, stats, time.monotonic() - started,
                            failure)
        return self._exit_code(failure)

    def _exit_code(self, failure: ManagedSessionError | None) -> int:
        if self.interrupted and not self.completed:
            return EXIT_INTERRUPTED
        return 1 if failure or self.gaps or self.differences else 0

    @staticmethod
    def _stats_or_none(session: ManagedBacktestSession) -> SessionStats | None:
        """The session's stats, or None when it cannot answer: the summary must come."""
        try:
            return session.stats()
        except ManagedSessionError:
            return None

    def _not_opened(self, exc: ManagedSessionError) -> int:
        """One line on stderr; a range the server has no blocks for is a bad argument (2)."""
        reason = " ".join(str(exc).split())  # one line, however long
        range_error = next((kind for kind in RANGE_ERRORS if kind in reason), None)
        if range_error is not None and self.resume is None:
            sys.stderr.write(f"backtest-actors run: slots {self.create.start_slot}..="
                             f"{self.create.end_slot}: the server has no blocks for this "
                             f"range ({range_error})\n")
            return 2
        what = "not created" if self.resume is None else "cannot be resumed"
        hint = {"sessionNotFound": " (it expired, or the server never had it)",
                "sessionOwnerMismatch": " (another API key owns it)",
                "no session within": f" (nothing answered at {self.url} within "
                                     f"--startup-timeout: is the URL right and the server up?)"}
        extra = next((h for k, h in hint.items() if k in reason), "")
        if self._busy_seen and "sessionNotFound" in reason:
            extra = (" (another process was resuming it at the same time and owned it; the "
                     "session is gone now: that process finished or closed it)")
        elif self._busy_seen and "no session within" in reason:
            extra = " (another process owns the session: it is being resumed there now)"
        sys.stderr.write(f"backtest-actors run: session {what}: {reason}{extra}\n")
        return 1

    def _open(self) -> ManagedBacktestSession:
        common: dict[str, Any] = {
            "timing": self.timing, "policy": self.policy, "max_run_ahead": self.max_run_ahead,
            "on_lost_continue": self.on_lost_continue, "start_timeout": self.start_timeout}
        if self.opener is not None:
            session = self.opener()
            if self.resume is None:
                return session
        elif self.resume is None:
            return ManagedBacktestSession.start(self.url, self.api_key, self.create,
                                                on_starting=self._starting, **common)
        else:
            session = ManagedBacktestSession.attach(self.url, self.api_key, self.resume.cursor,
                                                    on_starting=self._starting, **common)
        try:
            # Only now is the journal touched: a torn last line is cut off, then appended to.
            assert self.resume_path is not None
            out = open(self.resume_path, "r+", encoding="utf-8")  # noqa: SIM115
            out.truncate(self.resume.valid_bytes)
            out.seek(0, os.SEEK_END)
        except OSError:
            session.shutdown()
            raise
        self.out, self.journal = out, JournalWriter(out)
        return session

    def _header(self, session: ManagedBacktestSession) -> None:
        if self.journal is None:
            return
        info = session.session_info
        self.journal.header(JournalHeader(
            backtest_ws_url(self.url), info.session_id, info.rpc_endpoint,
            self.create.start_slot, self.create.end_slot, tuple(self.tx_addrs),
            tuple(self.diff_addrs), self.advance, self.embedded, dict(self.knobs),
            tuple(f.program_executed for f in self.create.discoveries), self.inject,
            bool(self.create.actions)))

    def _starting(self, change: ConnectionChanged) -> None:
        """Retries before the session exists, as they happen (terminal or pipe)."""
        status = change.status
        if isinstance(status, Reconnecting) and "sessionOwnershipBusy" in status.reason:
            self._busy_seen = True
        if isinstance(status, Reconnecting) and not self.quiet:
            self.console.print(
                f"connecting: attempt {status.attempt} failed ({status.reason}); next try "
                f"in {status.delay:.1f}s", highlight=False, soft_wrap=True)

    def _count(self, event: ManagedEvent) -> None:
        self.counts["events"] += 1
        if self.journal is not None and self.session is not None:
            self.journal.event(event, self.session.delivered_seq)
        if isinstance(event, Slot):
            self.counts["slots"] += 1
            if self.expected is not None:
                self.delivered.slots.append(event.slot)
            self._check_duplicate(event.slot, ("slot", event.slot))
            self.last_slot = event.slot
        elif isinstance(event, DiscoveryBatch):
            self.counts["discoveries"] += 1
        elif isinstance(event, Paused):
            self.counts["pauses"] += 1
        elif isinstance(event, ActionResult):
            self.counts["actions"] += 1
        elif isinstance(event, Transaction):
            self.counts["transactions"] += 1
            if self.expected is not None:
                self.delivered.signatures.append(event.signature)
            self._check_duplicate(event.slot, event.signature)
        elif isinstance(event, AccountDiff):
            self.counts["account_diffs"] += 1
            if self.expected is not None:
                self.delivered.diff_keys.append(event.key)
            self._check_duplicate(event.slot, event.key)
        elif isinstance(event, Status):
            self.stage = event.stage
        elif isinstance(event, Error):
            self.counts["errors"] += 1
        elif isinstance(event, ConnectionChanged) and isinstance(event.status, Reconnecting):
            self.counts["reconnects"] += 1
        elif isinstance(event, Gap):
            self.gaps.append(event)
        elif isinstance(event, ContinueLost):
            self.lost_continues.append(event)

    def _check_duplicate(self, slot: int, key: Any) -> None:
        keys = self.seen.setdefault(slot, set())
        if key in keys:
            self.counts["duplicates_delivered"] += 1
        keys.add(key)
        if len(self.seen) > DUPLICATE_HORIZON:
            for old in sorted(self.seen)[:-DUPLICATE_HORIZON]:
                del self.seen[old]

    def _done(self) -> int:
        if self.summary is not None or self.completed:
            return self.total  # the range is done even when its last slots had no block
        if self.last_slot is None:
            return 0
        return self.last_slot - self.create.start_slot + 1

    def _progress(self, session_id: str) -> Any:
        if self.quiet:
            return NoProgress()
        return (LiveProgress(self, session_id) if self.console.is_terminal
                else PlainProgress(self, session_id))

    def _schedule_chaos(self, session_id: str) -> None:
        """Drops and blackholes at random slots on every connection (seeded)."""
        sim = self.chaos
        assert sim is not None
        rng = random.Random(self.seed)
        slots = sim.expected(self.create.start_slot, self.create.end_slot).slots[3:-3]
        targets = ["control"] + (["transactions"] if self.tx_addrs else []) + (
            ["account_diffs"] if self.diff_addrs else [])
        for target in targets:
            for slot in rng.sample(slots, min(3, len(slots))):
                sim.faults.drop(target, at_slot=slot, session_id=session_id)  # type: ignore[arg-type]
            sim.faults.blackhole(target, at_slot=rng.choice(slots),  # type: ignore[arg-type]
                                 session_id=session_id)

    def _result(self, failure: ManagedSessionError | None) -> str:
        if self.interrupted and not self.completed:
            return "interrupted"
        if failure is not None:
            return f"failed: {failure}"
        if self.gaps:
            return f"completed with {len(self.gaps)} gap(s): events may be missing"
        if self.differences:
            return "completed, but the delivery differs from the simulator's expected()"
        return "completed"

    def summary_document(self, session_id: str, stats: SessionStats | None, wall: float,
                         failure: ManagedSessionError | None) -> dict[str, Any]:
        """The summary as plain data: what ``--json`` prints and the table shows."""
        counters = stats.as_dict() if stats is not None else {}
        # The session's first Slot is the start slot (the anchor), not a block; a resumed
        # run counts from the journal's history, which holds it.
        anchor = 1 if self.counts["slots"] else 0
        blocks = self.counts["slots"] - anchor
        return {
            "result": ("interrupted" if self.interrupted and not self.completed
                       else "failed" if failure is not None
                       else "completed_with_gaps" if self.gaps else "completed"),
            "error": None if failure is None else str(failure),
            "exit_code": self._exit_code(failure),
            "session_id": session_id,
            "start_slot": self.create.start_slot, "end_slot": self.create.end_slot,
            "range_slots": self.total, "range_slots_done": self._done(),
            "slot_events": self.counts["slots"], "blocks_executed": blocks,
            "transactions": self.counts["transactions"],
            "account_diffs": self.counts["account_diffs"], "events": self.counts["events"],
            "discoveries": self.counts["discoveries"], "pauses": self.counts["pauses"],
            "actions": self.counts["actions"],
            "reconnects": counters.get("reconnects", {}),
            "replays_dropped": counters.get("replays_dropped", 0),
            "address_repeats_dropped": counters.get("address_repeats_dropped", 0),
            "duplicates_delivered": self.counts["duplicates_delivered"],
            "malformed_frames": counters.get("malformed_frames", 0),
            "lost_continues": counters.get("lost_continues", 0),
            "continues_resent": counters.get("continues_resent", 0),
            "double_advances": counters.get("double_advances", 0),
            "delivery": (None if self.differences is None
                         else "exact" if not self.differences else self.differences),
            "gaps": [{"stream": g.stream, "first_slot": g.first_slot,
                      "last_slot": g.last_slot, "slots": g.slots} for g in self.gaps],
            "wall_seconds": round(wall, 3),
            "server": self.summary,
        }

    def _print_summary(self, session_id: str, stats: SessionStats | None, wall: float,
                       failure: ManagedSessionError | None) -> None:
        doc = self.summary_document(session_id, stats, wall, failure)
        if self.report is not None:
            self.report(doc)
            return
        if self.json_summary:
            sys.stdout.write(dump_document(doc) + "\n")  # the codec: the one converter
            sys.stdout.flush()
            return
        # Slots are the range, blocks what ran: the one line that explains 263 vs 300.
        caption = (f"{doc['range_slots_done']} slots held {doc['blocks_executed']} produced "
                   f"blocks: a slot with no block is skipped")
        table = Table(title=f"backtest {session_id}", show_header=True, caption=caption)
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("result", self._result(failure))
        for gap in self.gaps:
            table.add_row(f"gap: {gap.stream}",
                          f"slots {gap.first_slot}..={gap.last_slot} ({gap.slots} slots)")
        table.add_row("range", f"{self.create.start_slot}..={self.create.end_slot}")
        table.add_row("slots done", f"{doc['range_slots_done']}/{self.total}")
        anchor = " (+1 start slot)" if doc["slot_events"] > doc["blocks_executed"] else ""
        table.add_row("blocks executed", f"{doc['blocks_executed']}{anchor}")
        table.add_row("transactions", str(self.counts["transactions"]))
        table.add_row("account diffs", str(self.counts["account_diffs"]))
        if self.create.actions or self.counts["actions"]:
            table.add_row("action results", str(self.counts["actions"]))
        if self.discover:
            table.add_row("discoveries", str(self.counts["discoveries"]))
            table.add_row("pauses", str(self.counts["pauses"]))
        table.add_row("events", str(self.counts["events"]))
        for name, count in sorted(doc["reconnects"].items()):
            table.add_row(f"reconnects: {name}", str(count))
        table.add_row("replays dropped", str(doc["replays_dropped"]))
        table.add_row("same tx, other address", str(doc["address_repeats_dropped"]))
        table.add_row("duplicates delivered", str(self.counts["duplicates_delivered"]))
        table.add_row("malformed frames", str(doc["malformed_frames"]))
        table.add_row(f"lost continues ({self.on_lost_continue})",
                      f"{doc['lost_continues']} (resent {doc['continues_resent']})")
        table.add_row("double advances", str(doc["double_advances"]))
        if self.differences is not None:
            table.add_row("delivery vs expected()", "exact" if not self.differences
                          else "\n".join(self.differences))
        table.add_row("wall time", f"{wall:.2f} s")
        for key, value in sorted((self.summary or {}).items()):
            table.add_row(f"server: {key}", str(value))
        Console(soft_wrap=True).print(table)


class _JournaledDrive(Drive):
    """The run's loop: each event counted and journaled, each continue written ahead
    into the journal, every wait interruptible by Ctrl-C (see ``_Run._wait``)."""

    def __init__(self, run: Run, session: ManagedBacktestSession) -> None:
        super().__init__(session, run.advance, discover=run.discover, inject=run.inject)
        self._run = run
        self.update: Callable[[], None] = lambda: None

    def next_event(self) -> ManagedEvent:
        event: ManagedEvent = self._run._wait(self.session.next_event)
        return event

    def event(self, event: ManagedEvent) -> AnyContinue | None:
        self._run._count(event)
        self.update()
        return None

    def before_continue(self, params: AnyContinue) -> None:
        if self._run.journal is not None:
            self._run.journal.continue_sent(params, self.session.delivered_seq)

    def send_continue(self, params: AnyContinue) -> None:
        self._run._wait(lambda: Drive.send_continue(self, params))

    def lost(self, event: ContinueLost, params: AnyContinue | None) -> None:
        raise ManagedSessionError("control_failed", "a continue was lost in flight "
                                  "(--on-lost-continue raise)")


