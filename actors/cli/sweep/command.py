"""``backtest-actors sweep``: many backtests at once (flags or a TOML sweep file).

Kept apart from :mod:`actors.cli.parser` (which only registers the subcommand) so the
single-run command and the sweep evolve without stepping on each other. The
embedded simulator's timing and policy are its own (``LocalSimulator.timing``,
``.policy``) and the key rules are the ``run`` command's.
Exit codes: 0 every session completed, 1 some failed (reasons in
``summary.json`` and on stdout), 2 bad arguments (nothing sent).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from protocol import ReconnectPolicy, Timing, backtest_ws_url
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.arguments import int_at_least, seconds

from .driver import DEFAULT_RETRIES, BackendChoice, Sweep, SweepConfig, ray_available
from .plan import PLAN_FILE, PlanError, RangeRule, SweepFile, SweepPlan, read_sweep_file, resolve
from .progress import progress_for

API_KEY_ENV = "BACKTEST_API_KEY"
DEFAULT_CONCURRENCY = 4
DEFAULT_SLOT_COUNT = 200


def add_parser(sub: Any, positive: Any, slot: Any) -> None:
    """Register ``sweep`` on the CLI's subparsers (``positive``/``slot``: its int types)."""
    p = sub.add_parser("sweep", help="run many backtests at once (Ray, or this process)")
    p.add_argument("file", nargs="?", help="a TOML sweep file (ranges and addresses)")
    p.add_argument("--sessions", type=positive, help="N consecutive ranges ...")
    p.add_argument("--slot-count", type=positive,
                   help=f"... of this many slots each (default {DEFAULT_SLOT_COUNT})")
    p.add_argument("--start-slot", type=slot, help="first slot (default: start of range)")
    p.add_argument("--advance", type=positive, help="produced blocks per continue (default 1)")
    p.add_argument("--transactions", action="append", default=[], metavar="ADDR")
    p.add_argument("--account-diffs", action="append", default=[], metavar="ADDR")
    p.add_argument("--concurrency", type=positive,
                   help=f"sessions at once, and reconnects at once after the ungated "
                        f"attempts (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--out", metavar="DIR", help="one JSONL journal per session + summary.json")
    p.add_argument("--resume", metavar="DIR", help="finish the sweep of DIR: completed "
                   "sessions are skipped, the others resume from their journals")
    p.add_argument("--url", help="simulator host or ws(s):// URL; default: embedded local")
    p.add_argument("--api-key", help=f"API key (or ${API_KEY_ENV}); never printed")
    p.add_argument("--address", help="Ray cluster: 'auto' or ray://host:10001 (default: an "
                   "embedded local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run the sessions in this process")
    p.add_argument("--workers", type=positive, help="Ray workers (default: min(K, CPUs))")
    p.add_argument("--retries", type=_non_negative, default=DEFAULT_RETRIES,
                   help=f"resumes per session after retryable failures or lost workers "
                        f"(default {DEFAULT_RETRIES})")
    p.add_argument("--max-run-ahead", type=positive, default=80, metavar="SLOTS")
    p.add_argument("--continue-quiet", type=seconds, metavar="SECONDS",
                   help="after a re-attach, how long nothing new proves a continue in "
                        "flight was lost (default: the keepalive deadline)")
    p.add_argument("--seed", type=int, default=0, help="embedded chain seed")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")


_non_negative = int_at_least(0)


def main(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    """Run the sweep ``args`` describes; ``usage_error`` is raised for bad arguments."""
    try:
        return _Command(args).execute()
    except PlanError as exc:
        raise usage_error(f"backtest-actors sweep: {exc}") from None


class _Command:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.console = Console(stderr=True)

    def _key(self) -> str:
        key: str = self.args.api_key or os.environ.get(API_KEY_ENV, "")
        if not key:
            raise PlanError(f"--url needs --api-key or ${API_KEY_ENV}")
        return key

    def _backend(self) -> BackendChoice:
        args = self.args
        if args.no_ray:
            if args.address:
                raise PlanError("--address needs Ray; leave out --no-ray")
            return "in-process"
        if not ray_available():
            if args.address:
                raise PlanError("--address needs Ray: pip install 'backtest-actors[ray]'")
            return "in-process"
        return "ray"

    def execute(self) -> int:
        args = self.args
        if args.verbose:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format="%(asctime)s %(name)s %(message)s")
        else:
            # What the sweep itself warns about (a summary set aside, a killed sweep's
            # Ray ended) is for the user even without --verbose; the sessions' own
            # records stay behind --verbose.
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("sweep: warning: %(message)s"))
            sweep_log = logging.getLogger("backtest_actors.sweep")
            sweep_log.addHandler(handler)
            sweep_log.setLevel(logging.WARNING)
        backend = self._backend()
        if args.resume is not None:
            return self._resume(backend)
        if args.url is None and args.api_key:
            raise PlanError("--api-key needs --url")
        if args.url is not None:
            try:
                backtest_ws_url(args.url)
            except ValueError as exc:
                raise PlanError(f"--url: {exc}") from None
        elif args.address:
            raise PlanError("a Ray cluster's workers cannot reach the embedded simulator: "
                            "pass --url")
        sweep_file = self._sweep_file()
        concurrency = args.concurrency or sweep_file.concurrency or DEFAULT_CONCURRENCY
        if args.url is None:
            with LocalSimulator(seed=args.seed) as sim:
                first, last = sim.available_range()
                addresses = (tuple(sim.addresses[:2]), tuple(sim.addresses[2:4]))
                sessions = resolve(sweep_file, first, last, addresses)
                plan = SweepPlan(None, sessions, args.seed, args.max_run_ahead)
                return self._run(plan, sim.url, DEFAULT_API_KEY, concurrency, sim.timing,
                                 sim.policy, backend)
        key = self._key()
        sessions = resolve(sweep_file, None, None, None)
        plan = SweepPlan(backtest_ws_url(args.url), sessions, args.seed, args.max_run_ahead)
        return self._run(plan, plan.url or "", key, concurrency, self._timing(),
                         ReconnectPolicy(), backend)

    def _timing(self) -> Timing:
        quiet = self.args.continue_quiet
        return Timing() if quiet is None else Timing(continue_quiet=quiet)

    def _sweep_file(self) -> SweepFile:
        args = self.args
        flags = (args.sessions, args.slot_count, args.start_slot, args.advance,
                 args.transactions, args.account_diffs)
        if args.file is not None:
            if any(flags):
                raise PlanError("give the ranges in the sweep file or as flags, not both")
            return read_sweep_file(args.file)
        rule = RangeRule(args.slot_count or DEFAULT_SLOT_COUNT, args.start_slot,
                         args.sessions or 1)
        return SweepFile((rule,), None, args.advance or 1, tuple(args.transactions),
                         tuple(args.account_diffs))

    def _resume(self, backend: BackendChoice) -> int:
        args = self.args
        for option in ("file", "sessions", "slot_count", "start_slot", "advance", "url",
                       "out", "transactions", "account_diffs"):
            if getattr(args, option):
                raise PlanError(f"--resume takes {option.replace('_', '-')} from "
                                f"{PLAN_FILE}; leave it out")
        try:
            with open(os.path.join(args.resume, PLAN_FILE), encoding="utf-8") as f:
                plan = SweepPlan.from_json(f.read())
        except OSError as exc:
            sys.stderr.write(f"backtest-actors sweep: --resume {args.resume}: "
                             f"{exc.strerror or exc}\n")
            return 1
        if plan.embedded:
            sys.stderr.write("backtest-actors sweep: --resume: this sweep ran against the "
                             "embedded simulator, which died with its process: it cannot be "
                             "resumed\n")
            return 2
        args.out = args.resume
        return self._run(plan, plan.url or "", self._key(),
                         args.concurrency or plan.concurrency or DEFAULT_CONCURRENCY,
                         self._timing(), ReconnectPolicy(), backend)

    def _run(self, plan: SweepPlan, url: str, key: str, concurrency: int, timing: Timing,
             policy: ReconnectPolicy, backend: BackendChoice) -> int:
        args = self.args
        out = args.out or tempfile.mkdtemp(prefix="backtest-sweep-")
        where = ("Ray" + (f" at {args.address}" if args.address else " (embedded local)")
                 if backend == "ray" else
                 "this process (--no-ray)" if args.no_ray else
                 "this process: Ray is not installed (pip install 'backtest-actors[ray]' "
                 "to distribute)")
        self.console.print(f"sweep: {len(plan.sessions)} sessions, {concurrency} at once, "
                           f"on {where}; journals in {out}", highlight=False, soft_wrap=True)
        plan = attrs.evolve(plan, concurrency=concurrency)  # written to sweep.json for --resume
        config = SweepConfig(plan, url, key, out, concurrency, timing, policy, backend,
                             args.address, args.workers, args.retries)
        progress = progress_for(self.console)
        sweep = Sweep(config, on_tick=progress)
        try:
            summary = sweep.run()
        except KeyboardInterrupt:
            progress.close(sweep)
            sys.stderr.write(f"backtest-actors sweep: interrupted; finish it with "
                             f"--resume {out}\n")
            return 130
        progress.close(sweep)
        _print_summary(summary, out)
        return 0 if summary["completed"] == summary["sessions"] else 1


def _print_summary(summary: dict[str, Any], out: str) -> None:
    table = Table(title="sweep", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("sessions", str(summary["sessions"]))
    table.add_row("completed", str(summary["completed"]))
    table.add_row("failed", str(len(summary["failed"])))
    for failure in summary["failed"]:
        table.add_row(f"failed: {failure['name']}", failure["reason"])
    for kind, count in summary["events"].items():
        table.add_row(f"events: {kind}", str(count))
    table.add_row("reconnects", str(summary["reconnects"]))
    table.add_row("resumes", str(summary["resumes"]))
    table.add_row("lost workers", str(summary["lost_workers"]))
    table.add_row("backend", summary["backend"])
    table.add_row("wall time", f"{summary['wall_time']:.2f} s")
    table.add_row("summary", os.path.join(out, "summary.json"))
    Console(soft_wrap=True).print(table)
