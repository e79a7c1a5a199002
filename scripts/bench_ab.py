"""Two checkouts of this library, one managed session each, against one blast server.

    python scripts/bench_ab.py OLD_DIR NEW_DIR [--pairs 6] [--runs 3]

    (e.g. ``git worktree add /tmp/old HEAD~1`` for OLD_DIR)

Why: on the shared 2-core machine the same code's CPU per notification moves by a
third within an hour, so a change of a few percent is only seen when both versions
take turns against the same server, each run in a fresh process (a warm-up run
first), the order turning each round. Prints the median rate and the median client
CPU per notification of each. The server is ``scripts/blast_server.py`` from this
checkout (40 slots of 2,500 notifications).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ADDRESS = "8FwVNU7nnbro5bDTJ9FcGDB8gV33h7ahzqzVv2WaMU93"
SLOTS = 40
# The blast server's anchor slot (bench.BLAST_FIRST_SLOT, checked in main()): not
# imported in the client, where bench would import this checkout's library first.
BLAST_FIRST_SLOT = 400_000_000


def client(root: str, url: str, runs: int) -> None:
    """In a child process: ``runs`` timed sessions of the checkout at ``root``."""
    sys.path.insert(0, root)
    from actors import Completed, ManagedBacktestSession, ReadyForContinue
    from protocol import ContinueParams, CreateSession, Timing
    from protocol.simulator import DEFAULT_API_KEY

    timing = Timing(connect=5, handshake=10, keepalive_interval=0.1,
                    keepalive_deadline=0.5, graceful_close=2)

    def run() -> tuple[float, float]:
        session = ManagedBacktestSession.start(
            url, DEFAULT_API_KEY, CreateSession(BLAST_FIRST_SLOT, BLAST_FIRST_SLOT + SLOTS),
            timing=timing)
        try:
            session.subscribe_transactions([ADDRESS])
            while not isinstance(session.next_event(timeout=30), ReadyForContinue):
                pass
            cpu, started = time.process_time(), time.perf_counter()
            session.send_continue(ContinueParams(advance_count=SLOTS))
            events = 0
            while not isinstance(session.next_event(timeout=60), Completed):
                events += 1
            return (events / (time.perf_counter() - started),
                    (time.process_time() - cpu) / events * 1e6)
        finally:
            session.shutdown()

    run()  # warm-up: imports and page faults
    for _ in range(runs):
        rate, cpu = run()
        sys.stdout.write(f"{rate:.0f} {cpu:.3f}\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=6,
                        help="turns of both checkouts (the order turns each time)")
    parser.add_argument("--runs", type=int, default=3, help="timed sessions per process")
    parser.add_argument("--client", nargs=2, metavar=("ROOT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client(args.client[0], args.client[1], args.runs)
        return 0
    from bench import BLAST_FIRST_SLOT as BENCH_FIRST_SLOT
    from bench import blast_process

    assert BENCH_FIRST_SLOT == BLAST_FIRST_SLOT

    roots = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in roots}
    with blast_process(SLOTS, 2500) as url:
        for i in range(args.pairs):
            for name in (list(roots) if i % 2 == 0 else list(roots)[::-1]):
                out = subprocess.run(
                    [sys.executable, __file__, args.old, args.new, "--runs", str(args.runs),
                     "--client", roots[name], url],
                    capture_output=True, text=True, timeout=600, check=True)
                for line in out.stdout.splitlines():
                    rate, cpu = line.split()
                    results[name][0].append(float(rate))
                    results[name][1].append(float(cpu))
    print("| checkout | notifications/s (median, range) | CPU µs/notification (median) |")
    print("|---|---|---|")
    for name, (rates, cpus) in results.items():
        print(f"| {name} ({roots[name]}) | {statistics.median(rates):,.0f} "
              f"({min(rates):,.0f}–{max(rates):,.0f}) | {statistics.median(cpus):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
