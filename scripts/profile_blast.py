"""Where the managed path spends its time against the blast server: yappi, every thread.

    python scripts/profile_blast.py [--top 20] [--slots 40] [--per-slot 2500]

cProfile sees one thread, and the managed path is four (the shared reader, the
subscription actor, the supervisor, the application); yappi profiles them all.
Self time (``tsub``) in CPU-clock mode, summed over threads, top entries first,
as a markdown table. yappi is not a dependency: ``pip install yappi`` first.
A profiler slows Python calls several times, so the shares matter, not the rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yappi  # noqa: E402
from bench import BLAST_FIRST_SLOT, blast_process, managed_run  # noqa: E402

ADDRESS = "8FwVNU7nnbro5bDTJ9FcGDB8gV33h7ahzqzVv2WaMU93"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--per-slot", type=int, default=2500)
    args = parser.parse_args(argv)
    with blast_process(args.slots, args.per_slot) as url:
        last = BLAST_FIRST_SLOT + args.slots
        managed_run(url, BLAST_FIRST_SLOT, last, [ADDRESS])  # warm-up, not profiled
        yappi.set_clock_type("cpu")
        yappi.start(builtins=True)
        rate = managed_run(url, BLAST_FIRST_SLOT, last, [ADDRESS])
        yappi.stop()
    stats = yappi.get_func_stats()
    total = sum(s.tsub for s in stats) or 1.0
    rows = sorted(stats, key=lambda s: s.tsub, reverse=True)[:args.top]
    print(f"managed session, {args.slots * args.per_slot:,} notifications, "
          f"{rate:,.0f}/s under the profiler\n")
    print("| function | where | self % | self s | calls |")
    print("|---|---|---|---|---|")
    for s in rows:
        where = f"{Path(s.module).name}:{s.lineno}" if s.lineno else Path(s.module).name
        print(f"| `{s.name}` | {where} | {100 * s.tsub / total:.1f} | {s.tsub:.2f} | "
              f"{s.ncall:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
