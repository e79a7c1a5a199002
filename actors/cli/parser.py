"""``backtest-actors``: the command line's parser and entry point.

``run`` is planned in :mod:`.plan` and driven in :mod:`.run`; ``sweep`` lives in
:mod:`.sweep`; ``simulator`` is the local simulator's own command. A bad
argument is one line on stderr and exit code 2, with nothing sent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from protocol.pubsub import PUBSUB_BUFFER_SLOTS
from protocol.simulator.__main__ import add_server_arguments
from protocol.simulator.arguments import int_at_least, seconds

from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD
from .plan import (
    API_KEY_ENV,
    DEFAULT_CHAIN_SLOTS,
    DEFAULT_SLOT_COUNT,
    DEFAULT_STARTUP_TIMEOUT,
    RunPlan,
    UsageError,
)
from .run import EXIT_INTERRUPTED


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
    run.add_argument("--discover", action="append", default=[], metavar="PROGRAM",
                     help="pause before every batch that invokes PROGRAM (repeatable; the "
                          "embedded chain's programs: 'simulator --list-addresses')")
    run.add_argument("--inject", metavar="FILE",
                     help="with --discover: send the base64 transactions in FILE (one per "
                          "line, '#' comments) at each pause, to run right before the batch")
    run.add_argument("--actions", metavar="FILE",
                     help="schedule the actions in FILE (JSON: a list of {\"slot\", "
                          "\"transactions\": [base64], \"label\"}) and journal their results")
    run.add_argument("--parallel", action="store_true",
                     help="run the range as one parallel session: the server splits it into "
                          "sub-sessions, driven over one control connection; --out is then a "
                          "directory (a journal per sub-session); exit 1 if any failed")
    run.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                     help="with --parallel: sub-sessions driven at once (default 4)")
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
    flaky = run.add_argument_group(
        "a flaky link", "the Timing and ReconnectPolicy fields of the same names; --resume "
        "keeps what the run was started with")
    flaky.add_argument("--keepalive-interval", type=seconds, metavar="SECONDS",
                       help="ping each connection this often (default: 15 against a server, "
                            "0.25 embedded)")
    flaky.add_argument("--keepalive-deadline", type=seconds, metavar="SECONDS",
                       help="a connection silent this long is dead and restarted (default: 45 "
                            "against a server, 1 embedded)")
    flaky.add_argument("--reconnect-attempts", type=_positive, metavar="N",
                       help="restarts of one outage before the run fails (default 10); a link "
                            "Up for the policy's uptime_reset starts a fresh count")
    run.add_argument("--startup-timeout", type=seconds, default=DEFAULT_STARTUP_TIMEOUT,
                     metavar="SECONDS",
                     help=f"give up if the session does not exist after this long (default "
                          f"{DEFAULT_STARTUP_TIMEOUT:g}); every retry is shown meanwhile")
    run.add_argument("--chaos", action="store_true",
                     help="embedded mode: drop and silence connections during the run")
    run.add_argument("--seed", type=int, default=0, help="embedded chain and chaos seed")
    run.add_argument("--chain-slots", type=_positive, metavar="N",
                     help=f"embedded mode: how many slots the chain holds (default "
                          f"{DEFAULT_CHAIN_SLOTS}); a longer one takes longer to build")
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
        plan = RunPlan.from_args(args)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return plan.execute()
    except KeyboardInterrupt:  # before or after the run's own handler (starting, closing)
        sys.stderr.write("backtest-actors: interrupted\n")
        return EXIT_INTERRUPTED


