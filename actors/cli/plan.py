"""``backtest-actors run``: the arguments checked and turned into one run.

Without ``--url`` the run goes against an embedded :class:`LocalSimulator`, so a
first run needs no key and no network. Progress goes to stderr: a live line on
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
import sys
from pathlib import Path
from typing import IO

import attrs
from rich.console import Console

from protocol import (
    CreateSession,
    DiscoveryFilter,
    ReconnectPolicy,
    ScheduledAction,
    Timing,
    backtest_ws_url,
)
from protocol.codec import load_document
from protocol.messages import is_base64, pubkey_problem
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator

from .journal import JournalError, JournalHeader, read_journal
from .parallel import MANIFEST, ParallelRun, is_parallel_journal
from .run import Run

API_KEY_ENV = "BACKTEST_API_KEY"
DEFAULT_SLOT_COUNT = 300
# The flaky-link flags a journal's header keeps for --resume (continue_quiet too).
KNOBS = ("keepalive_interval", "keepalive_deadline", "reconnect_attempts", "continue_quiet")
DEFAULT_CHAIN_SLOTS = 2000
# A command line that cannot reach its server says so in seconds, not after the policy's
# whole outage budget (300 s) meant for a server that is restarting.
DEFAULT_STARTUP_TIMEOUT = 15.0  # the embedded simulator's chain, as LocalSimulator's default


class UsageError(Exception):
    """A bad argument: exit 2 with one line, nothing sent."""


class RunPlan:
    """A validated run: everything checked before a connection is made."""

    def __init__(self, args: argparse.Namespace, api_key: str) -> None:
        self.args = args
        self.api_key = api_key

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunPlan:
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
                                  ("--chaos", args.chaos),
                                  ("--chain-slots", args.chain_slots)):
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
        for option, value in (("--chaos", args.chaos), ("--chain-slots", args.chain_slots)):
            if value:
                raise UsageError(f"backtest-actors run: {option} works only with the embedded "
                                 f"simulator (no --url)")
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

    def _timing(self, base: Timing | None = None, header: JournalHeader | None = None
                ) -> Timing:
        """``base`` (the defaults, or the embedded simulator's) with what the flags (or,
        on resume, the journal's header) set."""
        args = self.args
        changes: dict[str, float] = {}
        for name in ("keepalive_interval", "keepalive_deadline", "continue_quiet"):
            value = getattr(args, name)
            if value is None and header is not None:
                value = header.knobs.get(name)
            if value is not None:
                changes[name] = value
        try:
            return attrs.evolve(base or Timing(), **changes)
        except ValueError as exc:  # e.g. a deadline not after the interval
            raise UsageError(f"backtest-actors run: --keepalive-interval / "
                             f"--keepalive-deadline: {exc}") from None

    def _policy(self, base: ReconnectPolicy | None = None,
                header: JournalHeader | None = None) -> ReconnectPolicy:
        attempts = self.args.reconnect_attempts
        if attempts is None and header is not None:
            attempts = header.knobs.get("reconnect_attempts")
        policy = base or ReconnectPolicy()
        return policy if attempts is None else attrs.evolve(policy, max_attempts=int(attempts))

    def knobs(self) -> dict[str, float]:
        """The flaky-link flags given, for the journal's header (a resume keeps them)."""
        return {name: getattr(self.args, name) for name in KNOBS
                if getattr(self.args, name) is not None}

    def resume(self, console: Console) -> int:
        """``--resume FILE``: nothing is written to FILE unless the attach succeeded."""
        args = self.args
        if not os.path.exists(args.resume):  # a wrong path is a bad argument, as a bad flag
            sys.stderr.write(f"backtest-actors run: --resume {args.resume}: no such journal\n")
            return 2
        if is_parallel_journal(args.resume):
            return self._resume_parallel(console)
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
        create = CreateSession(header.start_slot, header.end_slot,
                               discoveries=[DiscoveryFilter(p) for p in header.discover])
        try:
            timing, policy = self._timing(header=header), self._policy(header=header)
        except UsageError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        return Run(console, header.url, self.api_key, create, timing,
                    policy, list(header.transactions), list(header.account_diffs),
                    header.advance, None, None, args.seed, max_run_ahead=args.max_run_ahead,
                    on_lost_continue=args.on_lost_continue, resume=state,
                    resume_path=args.resume, quiet=args.quiet or args.json,
                    json_summary=args.json, knobs={**header.knobs, **self.knobs()},
                    start_timeout=args.startup_timeout, inject=header.inject).run()

    def _resume_parallel(self, console: Console) -> int:
        """``--resume DIR`` of a ``run --parallel``: every unfinished sub-session goes on."""
        args = self.args
        try:
            url = load_document((Path(args.resume) / MANIFEST).read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sys.stderr.write(f"backtest-actors run: --resume {args.resume}: {exc}\n")
            return 1
        return ParallelRun(console, url, self.api_key, CreateSession(0, 0), self._timing(),
                           self._policy(), [], [], 1, None, args.concurrency, args.seed,
                           quiet=args.quiet or args.json, json_summary=args.json,
                           knobs=self.knobs(), start_timeout=args.startup_timeout,
                           resume_dir=args.resume, max_run_ahead=args.max_run_ahead,
                           on_lost_continue=args.on_lost_continue).run()

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
                simulator = LocalSimulator(
                    seed=args.seed, slots=args.chain_slots or DEFAULT_CHAIN_SLOTS).start()
                url = simulator.url
                timing = self._timing(simulator.timing)
                policy = self._policy(simulator.policy)
                first, last = simulator.available_range()
                start = first if args.start_slot is None else args.start_slot
                if not first <= start <= last:
                    raise UsageError(f"--start-slot {start}: the embedded simulator holds "
                                     f"slots {first}..={last}")
            else:
                url, timing, policy = args.url, self._timing(), self._policy()
                start, last = args.start_slot, None
            end = self._end(start, last)
            if args.parallel:
                # Not carried into the sub-sessions (yet): refused, never silently ignored.
                for option, value in (("--discover", args.discover), ("--inject", args.inject),
                                      ("--chaos", args.chaos), ("--actions", args.actions)):
                    if value:
                        raise UsageError(f"{option}: not with --parallel")
            discover, inject = self._discover()
            create = CreateSession(start, end,
                                   discoveries=[DiscoveryFilter(p) for p in discover],
                                   actions=self._actions(start, end))
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
        if args.parallel:
            try:
                return ParallelRun(console, url, self.api_key, create, timing, policy,
                                   tx_addrs, diff_addrs, args.advance, args.out,
                                   args.concurrency, args.seed, simulator=simulator,
                                   quiet=args.quiet or args.json, json_summary=args.json,
                                   knobs=self.knobs(), start_timeout=args.startup_timeout,
                                   max_run_ahead=args.max_run_ahead,
                                   on_lost_continue=args.on_lost_continue).run()
            finally:
                if simulator is not None:
                    simulator.close()
        out: IO[str] | None = None
        try:
            out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115
            return Run(console, url, self.api_key, create, timing, policy, tx_addrs,
                        diff_addrs, args.advance, out, simulator if args.chaos else None,
                        args.seed, max_run_ahead=args.max_run_ahead,
                        on_lost_continue=args.on_lost_continue,
                        embedded=simulator is not None, quiet=args.quiet or args.json,
                        json_summary=args.json, knobs=self.knobs(),
                        start_timeout=args.startup_timeout, inject=inject,
                        expected=None if simulator is None else simulator.expected(
                            start, end, transactions=tx_addrs, account_diffs=diff_addrs,
                            discover=discover, inject=inject, actions=create.actions)
                        ).run()
        except OSError as exc:
            sys.stderr.write(f"backtest-actors run: --out: {exc}\n")
            return 2
        finally:
            if out is not None:
                out.close()
            if simulator is not None:
                simulator.close()

    def _actions(self, start: int, end: int) -> list[ScheduledAction]:
        """``--actions FILE``, checked before anything is sent (the entry at fault named)."""
        path = self.args.actions
        if path is None:
            return []
        try:
            with open(path, encoding="utf-8") as f:
                doc = load_document(f.read())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"--actions {path}: cannot read it ({exc})") from None
        if not isinstance(doc, list) or not doc:
            raise UsageError(f"--actions {path}: expected a non-empty JSON list of actions")
        actions = []
        for index, entry in enumerate(doc):
            try:
                if not isinstance(entry, dict) or set(entry) - {"slot", "transactions", "label"}:
                    raise ValueError("expected {\"slot\", \"transactions\", \"label\"}")
                action = ScheduledAction(entry["slot"], entry.get("transactions", ()),
                                         entry.get("label", ""))
            except KeyError:
                raise UsageError(f"--actions {path}: action {index}: slot: required") from None
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--actions {path}: action {index}: {exc}") from None
            if not start <= action.slot <= end:
                raise UsageError(f"--actions {path}: action {index}: slot {action.slot} is "
                                 f"outside the run's range {start}..={end}")
            actions.append(action)
        return actions

    def _discover(self) -> tuple[list[str], tuple[str, ...]]:
        """``--discover`` programs and ``--inject`` transactions, checked before anything is
        sent: a bad program id or a line of FILE that is not base64 is named."""
        args = self.args
        for program in args.discover:
            problem = pubkey_problem(program)
            if problem is not None:
                raise UsageError(f"--discover {program!r}: {problem}")
        if len(set(args.discover)) != len(args.discover):
            raise UsageError("--discover: the same program twice")
        if args.inject is None:
            return list(args.discover), ()
        if not args.discover:
            raise UsageError("--inject: only with --discover (it is sent at each pause)")
        try:
            with open(args.inject, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--inject {args.inject}: cannot read it ({exc})") from None
        inject = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not is_base64(text):
                raise UsageError(f"--inject {args.inject}: line {number} is not a base64 "
                                 f"transaction: {text[:40]!r}")
            inject.append(text)
        if not inject:
            raise UsageError(f"--inject {args.inject}: no transaction in it")
        return list(args.discover), tuple(inject)

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
            # Name the flag the user passed, and how to get a longer chain.
            given = (f"--end-slot {end}" if args.end_slot is not None else
                     f"--slot-count {args.slot_count}: slots {start}..={end}")
            raise UsageError(f"{given}: the embedded simulator holds slots up to {last} "
                             f"(--chain-slots N makes a longer chain)")
        return end


