"""``python -m protocol.simulator --port 8900 --api-key local-dev-key [--seed N]``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from . import DEFAULT_API_KEY, LocalSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocol.simulator",
                                     description="Run the local backtest simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=2000)
    parser.add_argument("--txs-per-slot", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalSimulator(args.api_key, args.seed, args.slots, args.host, args.port,
                        txs_per_slot=args.txs_per_slot) as sim:
        first, last = sim.available_range()
        logging.getLogger("protocol.simulator").info(
            "serving %s (slots %d..=%d, seed %d); Ctrl-C to stop", sim.url, first, last,
            args.seed)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
