"""Where the managed path spends its time against the blast server, two ways.

    python scripts/profile_blast.py [--top 20] [--slots 40] [--per-slot 2500]
    py-spy record --gil -r 1000 -f raw -o prof.txt -- \
        python scripts/profile_blast.py --plain 6
    python scripts/profile_blast.py --summarize prof.txt [--top 20]

yappi (the first form): cProfile sees one thread, and the managed path is four (the
shared reader, the subscription actor, the supervisor, the application); yappi
profiles them all. Self time (``tsub``) in CPU-clock mode, summed over threads, top
entries first, as a markdown table. It slows every Python call several times and
counts every builtin call, so the shares matter, not the rate.

py-spy (the other two): ``--plain N`` runs N managed sessions with no profiler in
the process, for py-spy to sample the thread that holds the GIL (closer to where
the time goes); ``--summarize`` turns its raw output into the same table, self time
per function, start-up (imports, attrs' class building) left out. Neither profiler
is a dependency: ``pip install yappi`` or ``pip install py-spy`` first.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import BLAST_FIRST_SLOT, blast_process, managed_run  # noqa: E402

ADDRESS = "8FwVNU7nnbro5bDTJ9FcGDB8gV33h7ahzqzVv2WaMU93"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--per-slot", type=int, default=2500)
    parser.add_argument("--plain", type=int, metavar="N",
                        help="N managed sessions, no profiler (for py-spy)")
    parser.add_argument("--summarize", metavar="FILE", help="py-spy raw output to a table")
    args = parser.parse_args(argv)
    if args.summarize:
        return summarize(Path(args.summarize), args.top)
    if args.plain:
        with blast_process(args.slots, args.per_slot) as url:
            for _ in range(args.plain):
                rate = managed_run(url, BLAST_FIRST_SLOT, BLAST_FIRST_SLOT + args.slots,
                                   [ADDRESS])
                print(f"{rate:,.0f}/s", flush=True)
        return 0
    import yappi  # only this form needs it

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


# Frames of start-up, not of the stream: imports and attrs building its classes.
_START_UP = re.compile(r"importlib|_compile_bytecode|attr/_make")


_LINE = re.compile(r":\d+\)$")


def summarize(raw: Path, top: int) -> int:
    """py-spy's raw output (``stack;frames count`` per line): self time per function."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or int(count) == 0 or _START_UP.search(stack):
            continue
        total += int(count)
        own[_LINE.sub(")", frames[-1])] += int(count)  # per function, not per line
    print(f"{total:,} samples of the thread holding the GIL, start-up left out\n")
    print("| function | where | self % |")
    print("|---|---|---|")
    for frame, count in own.most_common(top):
        name, _, where = frame.partition(" (")
        where = Path(where.rstrip(")")).name if where else "(native)"
        print(f"| `{name or '?'}` | {where} | {100 * count / total:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
