"""How fast the local simulator streams transaction notifications to one subscriber.

    python scripts/bench_simulator.py [--slots 40] [--txs-per-slot 2000] [--runs 3]

A bare websocket-client reader (UTF-8 validation skipped, as the client does)
counts frames; the rate is notifications received / wall time from the
continue to the last notification. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websocket  # noqa: E402

from protocol import (  # noqa: E402
    Completed,
    ContinueParams,
    CreateSession,
    SessionCreated,
    Subscribe,
    decode_response,
    encode_request,
    encode_subscribe,
)
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator  # noqa: E402


def one_run(slots: int, txs_per_slot: int) -> tuple[int, float]:
    with LocalSimulator(slots=slots + 1, txs_per_slot=txs_per_slot) as sim:
        first, last = sim.available_range()
        ctl = websocket.create_connection(sim.url, header={"X-API-Key": DEFAULT_API_KEY},
                                          skip_utf8_validation=True)
        ctl.send(encode_request(CreateSession(first, last)))
        while not isinstance(msg := decode_response(ctl.recv())[1], SessionCreated):
            pass
        sub = websocket.create_connection(f"ws://127.0.0.1:{sim.port}/backtest/{msg.session_id}",
                                          skip_utf8_validation=True)
        # Every address: a dense stream (a tx mentioning two comes once per subscription).
        for i, address in enumerate(sim.addresses, 1):
            sub.send(encode_subscribe(Subscribe(i, "transactions", address)))
            sub.recv()
        expected = sum(len(tx.mentions) for slot in sim.chain.produced_in(first + 1, last)
                       for tx in sim.chain.block(slot))
        started = time.perf_counter()
        ctl.send(encode_request(ContinueParams(advance_count=slots)))
        for _ in range(expected):
            sub.recv()
        elapsed = time.perf_counter() - started
        while not isinstance(decode_response(ctl.recv())[1], Completed):
            pass
        ctl.close()
        sub.close()
        return expected, elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--txs-per-slot", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates = []
    count = 0
    for _ in range(args.runs):
        count, elapsed = one_run(args.slots, args.txs_per_slot)
        rates.append(count / elapsed)
    print("| what | notifications/run | runs | median notifications/s | min | max |")
    print("|---|---|---|---|---|---|")
    print(f"| simulator -> 1 subscriber | {count} | {args.runs} | "
          f"{statistics.median(rates):,.0f} | {min(rates):,.0f} | {max(rates):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
