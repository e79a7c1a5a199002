"""``backtest-actors``: run a backtest (``run``) or the local simulator (``simulator``).

Without ``--url`` the run goes against an embedded :class:`LocalSimulator`, so a
newcomer needs no key and no network. Progress goes to stderr: a live line on
a terminal (rich), plain periodic lines otherwise; the summary table goes to
stdout. Exit codes: 0 completed, 1 the session failed, 2 bad arguments
(nothing is sent).

``--out FILE`` writes the journal (:mod:`actors.cli.journal`: a header naming the
endpoint and the session, never the key, then one JSON line per event; flushed
every line, fsynced at every continue). ``run --resume FILE`` rebuilds the
cursor from such a journal, re-attaches the session (URL and session from the
journal, the key from ``--api-key`` or ``$BACKTEST_API_KEY``) and appends to
the same file. A session that is gone, or a corrupt or foreign journal: one
line, exit 1, nothing appended. The embedded simulator dies with its process,
so its runs cannot be resumed (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from protocol import ContinueParams, CreateSession, ReconnectPolicy, Timing, backtest_ws_url
from protocol.codec import dump_document
from protocol.messages import pubkey_problem
from protocol.pubsub import PUBSUB_BUFFER_SLOTS
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.__main__ import add_server_arguments
from protocol.simulator.arguments import int_at_least, seconds

from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import (
    AccountDiff,
    ConnectionChanged,
    ContinueLost,
    Error,
    Gap,
    ManagedEvent,
    ManagedSessionError,
    Reconnecting,
    Slot,
    Status,
    Transaction,
)
from ..frontdoors.blocking import ManagedBacktestSession
from ..frontdoors.drive import Drive
from ..stats import SessionStats
from .journal import JournalError, JournalHeader, JournalState, JournalWriter, read_journal

API_KEY_ENV = "BACKTEST_API_KEY"
DEFAULT_SLOT_COUNT = 300
DUPLICATE_HORIZON = 2 * PUBSUB_BUFFER_SLOTS
PLAIN_PROGRESS_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal
# Exit code of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130
# Server errors that mean the range itself is wrong: the same rule as a bad argument.
RANGE_ERRORS = ("bundleNotFound", "noProducedBlocksInRange")


class UsageError(Exception):
    """A bad argument: exit 2 with one line, nothing sent."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


_positive = int_at_least(1, "a number")
_slot = int_at_least(0, "a slot number")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="backtest-actors",
                     description="Managed backtest sessions on a Solana simulator.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a backtest (embedded local simulator by default)")
    run.add_argument("--url", help="simulator host or ws(s):// URL; default: embedded local")
    run.add_argument("--api-key", help=f"API key (or ${API_KEY_ENV}); never printed")
    run.add_argument("--start-slot", type=_slot,
                     help="first slot (default: the embedded simulator's first; needed with "
                          "--url)")
    span = run.add_mutually_exclusive_group()
    span.add_argument("--slot-count", type=_positive,
                      help=f"slots in the range, skipped ones included (default "
                           f"{DEFAULT_SLOT_COUNT})")
    span.add_argument("--end-slot", type=_slot, help="last slot, inclusive")
    run.add_argument("--advance", type=_positive, default=1, metavar="BLOCKS",
                     help="produced blocks per continue (default 1); a slot with no block is "
                          "skipped and not counted, so 1000 slots at --advance 10 take about "
                          "90 continues, not 100")
    run.add_argument("--transactions", action="append", default=[], metavar="ADDR",
                     help="subscribe to transactions mentioning ADDR (repeatable; embedded "
                          "default: the first 2 of 'simulator --list-addresses')")
    run.add_argument("--account-diffs", action="append", default=[], metavar="ADDR",
                     help="subscribe to account diffs of ADDR (repeatable; embedded default: "
                          "its addresses 3 and 4)")
    run.add_argument("--max-run-ahead", type=_positive, default=DEFAULT_MAX_RUN_AHEAD,
                     metavar="SLOTS",
                     help=f"executed slots the session may run past what every subscription "
                          f"confirmed (default {DEFAULT_MAX_RUN_AHEAD}; above "
                          f"{PUBSUB_BUFFER_SLOTS}, the server's replay buffer, a long outage "
                          f"can lose events: reported as a gap, exit 1)")
    run.add_argument("--on-lost-continue", choices=("resend", "raise"), default="resend",
                     help="a continue that died unread with its connection: write it again "
                          "(default) or stop the run (exit 1)")
    run.add_argument("--out", metavar="FILE",
                     help="write every event as a JSON line (the journal --resume reads)")
    run.add_argument("--resume", metavar="FILE",
                     help="re-attach the session of this journal (URL and session from it, "
                          "key from --api-key or $BACKTEST_API_KEY) and append to it")
    run.add_argument("--continue-quiet", type=seconds, metavar="SECONDS",
                     help="after a re-attach, how long nothing new proves a continue in "
                          "flight was lost (default: the keepalive deadline)")
    run.add_argument("--chaos", action="store_true",
                     help="embedded mode: drop and silence connections during the run")
    run.add_argument("--seed", type=int, default=0, help="embedded chain and chaos seed")
    run.add_argument("-v", "--verbose", action="store_true", help="log reconnects to stderr")
    output = run.add_mutually_exclusive_group()
    output.add_argument("--quiet", "-q", action="store_true",
                        help="no progress and no retry lines on stderr (errors still; the "
                             "summary still goes to stdout)")
    output.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object on stdout instead of the "
                             "table (no progress on stderr)")
    from .sweep.command import add_parser as add_sweep_parser

    add_sweep_parser(sub, _positive, _slot)
    sim = sub.add_parser("simulator", help="run the local simulator standalone")
    add_server_arguments(sim)  # the same options as python -m protocol.simulator
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        if args.command == "simulator":
            from protocol.simulator.__main__ import main as simulator_main

            return simulator_main(args_list[1:])
        if args.command == "sweep":
            from .sweep.command import main as sweep_main

            return sweep_main(args, UsageError)
        plan = _Plan.from_args(args)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return plan.execute()
    except KeyboardInterrupt:  # before or after the run's own handler (starting, closing)
        sys.stderr.write("backtest-actors: interrupted\n")
        return EXIT_INTERRUPTED


class _Plan:
    """A validated run: everything checked before a connection is made."""

    def __init__(self, args: argparse.Namespace, api_key: str) -> None:
        self.args = args
        self.api_key = api_key

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Plan:
        # Checked here, not at subscribe time: by then the session exists on the server.
        for option, addresses in (("--transactions", args.transactions),
                                  ("--account-diffs", args.account_diffs)):
            for address in addresses:
                problem = pubkey_problem(address)
                if problem is not None:
                    raise UsageError(f"backtest-actors run: {option}: {problem}")
        if args.resume is not None:
            for option, value in (("--url", args.url), ("--start-slot", args.start_slot),
                                  ("--slot-count", args.slot_count),
                                  ("--end-slot", args.end_slot), ("--out", args.out),
                                  ("--transactions", args.transactions),
                                  ("--account-diffs", args.account_diffs),
                                  ("--chaos", args.chaos)):
                if value:
                    raise UsageError(f"backtest-actors run: --resume takes {option} from the "
                                     f"journal; leave it out")
            key = args.api_key or os.environ.get(API_KEY_ENV, "")
            if not key:
                raise UsageError(f"backtest-actors run: --resume needs --api-key or "
                                 f"${API_KEY_ENV} (the journal never holds the key)")
            return cls(args, key)
        if args.url is None:
            if args.api_key:
                raise UsageError("backtest-actors run: --api-key needs --url")
            return cls(args, DEFAULT_API_KEY)
        if args.chaos:
            raise UsageError("backtest-actors run: --chaos works only with the embedded "
                             "simulator (no --url)")
        try:
            backtest_ws_url(args.url)
        except ValueError as exc:
            raise UsageError(f"backtest-actors run: --url: {exc}") from None
        key = args.api_key or os.environ.get(API_KEY_ENV, "")
        if not key:
            raise UsageError(f"backtest-actors run: --url needs --api-key or ${API_KEY_ENV}")
        if args.start_slot is None:
            raise UsageError("backtest-actors run: --url needs --start-slot")
        return cls(args, key)

    def _timing(self) -> Timing:
        quiet = self.args.continue_quiet
        return Timing() if quiet is None else Timing(continue_quiet=quiet)

    def resume(self, console: Console) -> int:
        """``--resume FILE``: nothing is written to FILE unless the attach succeeded."""
        args = self.args
        try:
            state = read_journal(args.resume)
        except JournalError as exc:
            message = str(exc)
            if "embedded simulator" in message:
                sys.stderr.write(f"backtest-actors run: --resume: {message}\n")
                return 2
            sys.stderr.write(f"backtest-actors run: --resume {args.resume}: {message}\n")
            return 1
        if state.completed:
            sys.stderr.write(f"backtest-actors run: --resume: session "
                             f"{state.header.session_id} already completed; nothing to do\n")
            return 0
        header = state.header
        create = CreateSession(header.start_slot, header.end_slot)
        return _Run(console, header.url, self.api_key, create, self._timing(),
                    ReconnectPolicy(), list(header.transactions), list(header.account_diffs),
                    header.advance, None, None, args.seed, max_run_ahead=args.max_run_ahead,
                    on_lost_continue=args.on_lost_continue, resume=state,
                    resume_path=args.resume, quiet=args.quiet or args.json,
                    json_summary=args.json).run()

    def execute(self) -> int:
        args = self.args
        console = Console(stderr=True)
        if args.verbose:
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                                format="%(asctime)s %(name)s %(message)s")
        if args.resume is not None:
            return self.resume(console)
        simulator: LocalSimulator | None = None
        try:
            if args.url is None:
                simulator = LocalSimulator(seed=args.seed).start()
                url, timing, policy = simulator.url, simulator.timing, simulator.policy
                first, last = simulator.available_range()
                start = first if args.start_slot is None else args.start_slot
                if not first <= start <= last:
                    raise UsageError(f"--start-slot {start}: the embedded simulator holds "
                                     f"slots {first}..={last}")
            else:
                url, timing, policy = args.url, self._timing(), ReconnectPolicy()
                start, last = args.start_slot, None
            end = self._end(start, last)
            create = CreateSession(start, end)
            tx_addrs, diff_addrs = args.transactions, args.account_diffs
            if simulator is not None:
                self._check_embedded(simulator, start, end, tx_addrs + diff_addrs)
            if simulator is not None and not tx_addrs and not diff_addrs:
                tx_addrs, diff_addrs = list(simulator.addresses[:2]), list(
                    simulator.addresses[2:4])
        except (UsageError, ValueError) as exc:
            if simulator is not None:
                simulator.close()
            sys.stderr.write(f"backtest-actors run: {exc}\n".replace("run: backtest-actors "
                                                                     "run: ", "run: "))
            return 2
        out: IO[str] | None = None
        try:
            out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
            return _Run(console, url, self.api_key, create, timing, policy, tx_addrs,
                        diff_addrs, args.advance, out, simulator if args.chaos else None,
                        args.seed, max_run_ahead=args.max_run_ahead,
                        on_lost_continue=args.on_lost_continue,
                        embedded=simulator is not None, quiet=args.quiet or args.json,
                        json_summary=args.json).run()
        except OSError as exc:
            sys.stderr.write(f"backtest-actors run: --out: {exc}\n")
            return 2
        finally:
            if out is not None:
                out.close()
            if simulator is not None:
                simulator.close()

    def _check_embedded(self, simulator: LocalSimulator, start: int, end: int,
                        addresses: list[str]) -> None:
        """The embedded simulator's chain is known here: a range with no block, or an
        address it never touches, is refused before anything is sent."""
        if not simulator.chain.produced_in(start, end):
            raise UsageError(f"slots {start}..={end} hold no produced block")
        for option, values in (("--transactions", self.args.transactions),
                               ("--account-diffs", self.args.account_diffs)):
            for address in values:
                if address not in simulator.addresses:
                    raise UsageError(
                        f"{option} {address}: not an address of the embedded simulator "
                        f"(seed {self.args.seed}); see 'backtest-actors simulator "
                        f"--list-addresses --seed {self.args.seed}'")

    def _end(self, start: int, last: int | None) -> int:
        args = self.args
        if args.end_slot is not None:
            end: int = args.end_slot
        else:
            end = start + (args.slot_count or DEFAULT_SLOT_COUNT) - 1
            if last is not None and args.slot_count is None:
                end = min(end, last)
        if end < start:
            raise UsageError(f"--end-slot {end} is before the start slot {start}")
        if last is not None and end > last:
            raise UsageError(f"--end-slot {end}: the embedded simulator holds slots up to "
                             f"{last}")
        return end


class _Run:
    """One session, driven to completion, with progress and a summary."""

    def __init__(self, console: Console, url: str, api_key: str, create: CreateSession,
                 timing: Timing, policy: ReconnectPolicy, tx_addrs: list[str],
                 diff_addrs: list[str], advance: int, out: IO[str] | None,
                 chaos: LocalSimulator | None, seed: int, *,
                 max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
                 on_lost_continue: LostContinuePolicy = "resend", embedded: bool = False,
                 resume: JournalState | None = None, resume_path: str | None = None,
                 quiet: bool = False, json_summary: bool = False) -> None:
        self.console = console
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
                       "errors": 0, "reconnects": 0, "duplicates_delivered": 0}
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
            drive = _JournaledDrive(self, session)
            if self.resume is not None and self.resume.awaiting_continue:
                drive.continue_with(drive.default)  # it died between Ready and its continue
            if self.chaos is not None:
                self._schedule_chaos(session.session_info.session_id)
            with self._progress(session.session_info.session_id) as update:
                drive.update = update
                completed = drive.run()
                assert completed is not None  # never stopped: Ctrl-C raises instead
                self.summary, self.completed = completed.summary, True
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
        return 1 if failure or self.gaps else 0

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
                "sessionOwnerMismatch": " (another API key owns it)"}
        extra = next((h for k, h in hint.items() if k in reason), "")
        sys.stderr.write(f"backtest-actors run: session {what}: {reason}{extra}\n")
        return 1

    def _open(self) -> ManagedBacktestSession:
        common: dict[str, Any] = {
            "timing": self.timing, "policy": self.policy, "max_run_ahead": self.max_run_ahead,
            "on_lost_continue": self.on_lost_continue}
        if self.resume is None:
            return ManagedBacktestSession.start(self.url, self.api_key, self.create,
                                                on_starting=self._starting, **common)
        session = ManagedBacktestSession.attach(self.url, self.api_key, self.resume.cursor,
                                                **common)
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
            tuple(self.diff_addrs), self.advance, self.embedded))

    def _starting(self, change: ConnectionChanged) -> None:
        """Retries before the session exists, as they happen (terminal or pipe)."""
        status = change.status
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
            self._check_duplicate(event.slot, ("slot", event.slot))
            self.last_slot = event.slot
        elif isinstance(event, Transaction):
            self.counts["transactions"] += 1
            self._check_duplicate(event.slot, event.signature)
        elif isinstance(event, AccountDiff):
            self.counts["account_diffs"] += 1
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
            return _NoProgress()
        return (_LiveProgress(self, session_id) if self.console.is_terminal
                else _PlainProgress(self, session_id))

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
        return "completed"

    def summary_document(self, session_id: str, stats: SessionStats | None, wall: float,
                         failure: ManagedSessionError | None) -> dict[str, Any]:
        """The summary as plain data: what ``--json`` prints and the table shows."""
        counters = stats.as_dict() if stats is not None else {}
        # The first Slot of a created session is the start slot (the anchor), not a block;
        # a resumed run had its anchor before.
        anchor = 1 if self.resume is None and self.counts["slots"] else 0
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
            "reconnects": counters.get("reconnects", {}),
            "replays_dropped": counters.get("replays_dropped", 0),
            "address_repeats_dropped": counters.get("address_repeats_dropped", 0),
            "duplicates_delivered": self.counts["duplicates_delivered"],
            "malformed_frames": counters.get("malformed_frames", 0),
            "lost_continues": counters.get("lost_continues", 0),
            "continues_resent": counters.get("continues_resent", 0),
            "double_advances": counters.get("double_advances", 0),
            "gaps": [{"stream": g.stream, "first_slot": g.first_slot,
                      "last_slot": g.last_slot, "slots": g.slots} for g in self.gaps],
            "wall_seconds": round(wall, 3),
            "server": self.summary,
        }

    def _print_summary(self, session_id: str, stats: SessionStats | None, wall: float,
                       failure: ManagedSessionError | None) -> None:
        doc = self.summary_document(session_id, stats, wall, failure)
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
        table.add_row("wall time", f"{wall:.2f} s")
        for key, value in sorted((self.summary or {}).items()):
            table.add_row(f"server: {key}", str(value))
        Console(soft_wrap=True).print(table)


class _JournaledDrive(Drive):
    """The run's loop: each event counted and journaled, each continue written ahead
    into the journal, every wait interruptible by Ctrl-C (see ``_Run._wait``)."""

    def __init__(self, run: _Run, session: ManagedBacktestSession) -> None:
        super().__init__(session, run.advance)
        self._run = run
        self.update: Callable[[], None] = lambda: None

    def next_event(self) -> ManagedEvent:
        event: ManagedEvent = self._run._wait(self.session.next_event)
        return event

    def event(self, event: ManagedEvent) -> ContinueParams | None:
        self._run._count(event)
        self.update()
        return None

    def before_continue(self, params: ContinueParams) -> None:
        if self._run.journal is not None:
            self._run.journal.continue_sent(params, self.session.delivered_seq)

    def send_continue(self, params: ContinueParams) -> None:
        self._run._wait(lambda: self.session.send_continue(params))

    def lost(self, event: ContinueLost, params: ContinueParams | None) -> None:
        raise ManagedSessionError("control_failed", "a continue was lost in flight "
                                  "(--on-lost-continue raise)")


class _NoProgress:
    """``--quiet`` and ``--json``: nothing on stderr while the run goes."""

    def __enter__(self) -> Any:
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


class _LiveProgress:
    """A rich progress line on a terminal."""

    def __init__(self, run: _Run, session_id: str) -> None:
        self.run = run
        self.progress = Progress(
            TextColumn("[bold]{task.fields[sid]}"), BarColumn(),
            TextColumn("{task.completed}/{task.total} slots {task.percentage:>5.1f}%"),
            TextColumn("{task.fields[rate]:.1f} slots/s"), TimeRemainingColumn(),
            TextColumn("{task.fields[stage]} · {task.fields[events]} events · "
                       "{task.fields[reconnects]} reconnects"),
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
        self.progress.update(self.task, completed=done, rate=done / elapsed, stage=stage,
                             events=run.counts["events"], reconnects=run.counts["reconnects"])


class _PlainProgress:
    """Periodic plain lines (no carriage returns) when stderr is a pipe or a file."""

    def __init__(self, run: _Run, session_id: str) -> None:
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
        eta = (run.total - done) / rate if rate > 0 else float("nan")
        stage = run.stage if run.last_slot is None else f"slot {run.last_slot}"
        sys.stderr.write(
            f"progress …{self.session_tail}: {done}/{run.total} slots "
            f"({100 * done / run.total:.1f}%), {rate:.1f} slots/s, ETA {eta:.0f}s, {stage}, "
            f"{run.counts['events']} events, {run.counts['reconnects']} reconnects\n")
        sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
