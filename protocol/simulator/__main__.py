"""``python -m protocol.simulator --port 8900 --api-key local-dev-key [--seed N]``.

The simulator's command line (``backtest-actors simulator`` has the same
options). ``--list-addresses`` prints the chain's addresses and exits; the
server logs them at start-up too.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import DEFAULT_API_KEY, LocalSimulator
from .arguments import seconds
from .chain import Chain
from .server import (
    LOCAL_KEEPALIVE_DEADLINE,
    LOCAL_KEEPALIVE_INTERVAL,
    LOCAL_STALL_TIMEOUT,
    ServerLimits,
    ServerLiveness,
)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The standalone simulator's options; ``backtest-actors simulator`` has the same."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8900,
                        help="port to listen on (default 8900; 0 picks a free one, shown in "
                             "the 'serving' line)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY,
                        help=f"the key clients must send in X-API-Key (default "
                             f"{DEFAULT_API_KEY}); never logged")
    parser.add_argument("--seed", type=int, default=0,
                        help="synthetic chain seed: the same seed serves the same slots, "
                             "transactions and addresses (default 0)")
    parser.add_argument("--slots", type=int, default=2000,
                        help="slot numbers in the chain, from 400000000; about one in ten has "
                             "no produced block (default 2000)")
    parser.add_argument("--txs-per-slot", type=int, default=4,
                        help="average transactions per block (default 4; more costs CPU and "
                             "bandwidth per block)")
    parser.add_argument("--list-addresses", action="store_true",
                        help="print the chain's addresses (one a line, for --transactions and "
                             "--account-diffs) and its slot range, then exit")
    parser.add_argument(
        "--keepalive-interval", type=seconds, default=LOCAL_KEEPALIVE_INTERVAL,
        metavar="SECONDS",
        help=f"ping a connection idle this long (default {LOCAL_KEEPALIVE_INTERVAL:g}; "
             "a real server: 15, the client's default)")
    parser.add_argument(
        "--keepalive-deadline", type=seconds, default=LOCAL_KEEPALIVE_DEADLINE,
        metavar="SECONDS",
        help=f"close a connection silent this long, releasing the session it owns "
             f"(default {LOCAL_KEEPALIVE_DEADLINE:g}; a real server: 45, the client's default)")
    parser.add_argument(
        "--stall-timeout", type=seconds, default=LOCAL_STALL_TIMEOUT, metavar="SECONDS",
        help="close a reader that is alive but does not drain what it is sent for this "
             f"long; its session waits for it until then (default {LOCAL_STALL_TIMEOUT:g})")
    parser.add_argument(
        "--max-connections-per-client", type=int,
        default=ServerLimits().max_connections_per_client, metavar="N",
        help="live WebSocket connections one client address may hold; more are answered "
             "HTTP 429 (default %(default)s; a benchmark of hundreds of sessions from one "
             "process needs three per session)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocol.simulator",
                                     description="Run the local backtest simulator.")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    try:
        liveness = ServerLiveness(args.keepalive_interval, args.keepalive_deadline,
                                  stall_timeout=args.stall_timeout)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list_addresses:
        chain = Chain(args.seed, args.slots, txs_per_slot=args.txs_per_slot)
        first, last = chain.available_range()
        for address in chain.addresses:
            sys.stdout.write(f"{address}\n")
        sys.stderr.write(f"seed {args.seed}: slots {first}..={last}\n")
        sys.stderr.write("programs (for run --discover), most invoked first: "
                         f"{' '.join(chain.programs)}\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    limits = ServerLimits(max_connections_per_client=args.max_connections_per_client)
    with LocalSimulator(args.api_key, args.seed, args.slots, args.host, args.port,
                        txs_per_slot=args.txs_per_slot, liveness=liveness,
                        limits=limits) as sim:
        first, last = sim.available_range()
        logging.getLogger("protocol.simulator").info(
            "serving %s (slots %d..=%d, seed %d, keepalive %gs/%gs); Ctrl-C to stop", sim.url,
            first, last, args.seed, liveness.keepalive_interval, liveness.keepalive_deadline)
        logging.getLogger("protocol.simulator").info(
            "addresses (seed %d): %s", args.seed, " ".join(sim.addresses))
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
