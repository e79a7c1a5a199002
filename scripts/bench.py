"""Benchmarks: the actor pipeline against a raw socket loop, codec cost, recovery, scale.

    python scripts/bench.py [--quick] [--out FILE]

Each figure is the median of several runs; the managed/raw ratio is computed
pair by pair in the same run. The simulator runs in its own process, so the
client's figures (time, threads, RSS) are the client's alone. Prints markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
import websocket  # noqa: E402

from actors import (  # noqa: E402
    Completed,
    ConnectionChanged,
    ManagedBacktestSession,
    ReadyForContinue,
    Reconnecting,
    Transaction,
    Up,
)
from actors.decisions.pacer import DEFAULT_MAX_RUN_AHEAD  # noqa: E402
from protocol import (  # noqa: E402
    ContinueParams,
    CreateSession,
    ReconnectPolicy,
    SessionCreated,
    Subscribe,
    Timing,
    decode_pubsub,
    decode_response,
    encode_request,
    encode_subscribe,
)
from protocol.fastpath import NOTIFICATION_ENVELOPES  # noqa: E402
from protocol.simulator import (  # noqa: E402
    DEFAULT_API_KEY,
    REAL_SERVER_LIVENESS,
    LocalSimulator,
    ServerLiveness,
)
from protocol.simulator.chain import Chain  # noqa: E402
from protocol.simulator.process import simulator_process  # noqa: E402

TIMING = Timing(connect=5, handshake=10, keepalive_interval=0.1, keepalive_deadline=0.5,
                graceful_close=2)
BARRIER_EVERY = 4
BLAST_FIRST_SLOT = 400_000_000  # scripts/blast_server.py's anchor slot
# Restarts at once, bounded by time rather than by a count: after a blackholed control
# link the server answers sessionOwnershipBusy until its own keepalive has found the old
# connection dead, so the budget must outlive the server's deadline, however fast the
# attempts go (a count of 50 was spent in 0.7 s).
NO_DELAY = ReconnectPolicy(initial=0.0, jitter=0.0, max_attempts=100_000, max_total=10.0,
                           uptime_reset=1.0)
# The bench's simulator finds dead peers on the client's own timing, as a real server does.
SERVER_LIVENESS = ServerLiveness(keepalive_interval=TIMING.keepalive_interval,
                                 keepalive_deadline=TIMING.keepalive_deadline)


# --- 1. throughput ------------------------------------------------------------------------

def raw_run(url: str, first: int, last: int, addresses: list[str], frames: int) -> float:
    """A hand-written loop: one socket, recv + the same codec, nothing else."""
    ctl = websocket.create_connection(url, header={"X-API-Key": DEFAULT_API_KEY},
                                      skip_utf8_validation=True)
    ctl.send(encode_request(CreateSession(first, last)))
    while not isinstance(msg := decode_response(ctl.recv())[1], SessionCreated):
        pass
    sub = websocket.create_connection(url.replace("/backtest", f"/backtest/{msg.session_id}"),
                                      skip_utf8_validation=True)
    for i, address in enumerate(addresses, 1):
        sub.send(encode_subscribe(Subscribe(i, "transactions", address)))
        decode_pubsub(sub.recv())
    started = time.perf_counter()
    ctl.send(encode_request(ContinueParams(advance_count=last - first)))
    for _ in range(frames):
        decode_pubsub(sub.recv())
    elapsed = time.perf_counter() - started
    ctl.close()
    sub.close()
    return frames / elapsed


def managed_run(url: str, first: int, last: int, addresses: list[str],
                max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD) -> float:
    session = ManagedBacktestSession.start(url, DEFAULT_API_KEY, CreateSession(first, last),
                                           timing=TIMING, max_run_ahead=max_run_ahead)
    try:
        session.subscribe_transactions(addresses)
        while not isinstance(session.next_event(timeout=30), ReadyForContinue):
            pass
        started = time.perf_counter()
        session.send_continue(ContinueParams(advance_count=last - first))
        events = 0
        while not isinstance(event := session.next_event(timeout=60), Completed):
            events += isinstance(event, Transaction)
        elapsed = time.perf_counter() - started
        frames = events + session.stats().duplicates_dropped
    finally:
        session.shutdown()
    return frames / elapsed


def bench_throughput(runs: int, slots: int, txs_per_slot: int) -> list[list[str]]:
    chain = Chain(1, slots + 1, txs_per_slot=txs_per_slot)
    first, last = chain.available_range()
    addresses = list(chain.addresses)
    frames = sum(len(tx.mentions) for s in chain.produced_in(first + 1, last)
                 for tx in chain.block(s))
    per_slot = frames // len(chain.produced_in(first + 1, last))
    # The chain's blocks are 180,000 objects the client never sees; kept, every
    # full collection of the garbage collector would walk them too.
    del chain
    gc.collect()
    raw, managed, ratios, gated, gated_ratios = [], [], [], [], []
    with simulator_process(seed=1, slots=slots + 1, txs_per_slot=txs_per_slot) as url:
        def run_raw() -> float:
            return raw_run(url, first, last, addresses, frames)

        def run_managed() -> float:
            return managed_run(url, first, last, addresses)

        def run_gated() -> float:
            # The replay-horizon gate at its most expensive: a chunk and a barrier
            # round trip every BARRIER_EVERY slots instead of every ~40.
            return managed_run(url, first, last, addresses, max_run_ahead=BARRIER_EVERY)

        for i in range(runs):
            # The order turns each round (raw first, then last), so a drift of the
            # machine's speed within a round does not always favour the same side.
            if i % 2 == 0:
                r, m, g = run_raw(), run_managed(), run_gated()
            else:
                g, m, r = run_gated(), run_managed(), run_raw()
            raw.append(r)
            managed.append(m)
            gated.append(g)
            ratios.append(m / r)
            gated_ratios.append(g / r)
    return [
        ["raw websocket-client loop + codec", f"{statistics.median(raw):,.0f}",
         f"{min(raw):,.0f}–{max(raw):,.0f}"],
        ["managed session, next_event()", f"{statistics.median(managed):,.0f}",
         f"{min(managed):,.0f}–{max(managed):,.0f}"],
        ["ratio managed/raw (pairwise median)", f"{statistics.median(ratios):.2f}",
         f"{min(ratios):.2f}–{max(ratios):.2f}"],
        [f"managed, max_run_ahead={BARRIER_EVERY} (barrier per {BARRIER_EVERY} slots)",
         f"{statistics.median(gated):,.0f}", f"{min(gated):,.0f}–{max(gated):,.0f}"],
        [f"ratio managed(max_run_ahead={BARRIER_EVERY})/raw",
         f"{statistics.median(gated_ratios):.2f}",
         f"{min(gated_ratios):.2f}–{max(gated_ratios):.2f}"],
        ["stream", f"{frames:,} notifications", f"~{per_slot:,}/slot, {runs} runs"],
    ]


# --- 1b. against the blast server -----------------------------------------------------------

@contextlib.contextmanager
def blast_process(slots: int, per_slot: int) -> Iterator[str]:
    """``scripts/blast_server.py`` in a child process; yields its control URL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("blast_server.py")),
                             "--slots", str(slots), "--per-slot", str(per_slot)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the one line it writes, once it listens
        match = re.search(r"serving (ws://\S+/backtest)", line)
        if match is None:
            raise RuntimeError(f"the blast server did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_blast(runs: int, slots: int, per_slot: int) -> list[list[str]]:
    """One session against a server that writes pre-built frames from memory."""
    first, last = BLAST_FIRST_SLOT, BLAST_FIRST_SLOT + slots
    frames = slots * per_slot
    address = ["8FwVNU7nnbro5bDTJ9FcGDB8gV33h7ahzqzVv2WaMU93"]
    raw: list[float] = []
    managed: list[float] = []
    raw_cpu: list[float] = []
    managed_cpu: list[float] = []
    ratios: list[float] = []
    with blast_process(slots, per_slot) as url:
        def run(fn: Callable[[], float], rates: list[float], cpus: list[float]) -> float:
            cpu = time.process_time()
            rate = fn()
            cpus.append((time.process_time() - cpu) / frames * 1e6)
            rates.append(rate)
            return rate

        def run_raw() -> float:
            return run(lambda: raw_run(url, first, last, address, frames), raw, raw_cpu)

        def run_managed() -> float:
            return run(lambda: managed_run(url, first, last, address), managed, managed_cpu)

        run_raw()  # warm-up: the first connection pays the imports and the page faults
        raw.clear()
        raw_cpu.clear()
        for i in range(runs):
            if i % 2 == 0:
                r, m = run_raw(), run_managed()
            else:
                m, r = run_managed(), run_raw()
            ratios.append(m / r)
    return [
        ["raw websocket-client loop + codec", f"{statistics.median(raw):,.0f}",
         f"{min(raw):,.0f}–{max(raw):,.0f}", f"{statistics.median(raw_cpu):.2f}"],
        ["managed session, next_event()", f"{statistics.median(managed):,.0f}",
         f"{min(managed):,.0f}–{max(managed):,.0f}", f"{statistics.median(managed_cpu):.2f}"],
        ["ratio managed/raw (pairwise median)", f"{statistics.median(ratios):.2f}",
         f"{min(ratios):.2f}–{max(ratios):.2f}", ""],
        ["stream", f"{frames:,} notifications", f"{per_slot:,}/slot, {runs} pairs", ""],
    ]


# --- 2. codec ------------------------------------------------------------------------------

def bench_codec(runs: int) -> list[list[str]]:
    chain = Chain(2, 3, txs_per_slot=400)
    from protocol.simulator.engine import ExecutedSlot

    frames: list[str] = []
    for slot in chain.produced_in(chain.first_slot + 1, chain.last_slot):
        subs = {("transactions", a): [1] for a in chain.addresses}
        subs.update({("account_diffs", a): [2] for a in chain.addresses})
        frames += [
            f'{{"jsonrpc":"2.0","method":"{m}","params":{{"result":{r},"subscription":{s}}}}}'
            for m, r, s in ExecutedSlot(slot, chain.block(slot)).notifications(subs)]
    data = [f.encode() for f in frames]  # as the reader hands them over: bytes
    number = 5  # a pass takes a few ms: the minimum of many is the machine's quiet moment

    # Two ways, both reported. "Batch kept": a pass keeps every result in a list,
    # as the reader holds a batch of decoded frames for its actor; each result then
    # takes fresh memory from the allocator, a cost every decoder pays alike (not
    # the collector's: timeit turns it off while it times). "Each dropped": a
    # result is freed at once into memory the next call reuses: the call alone.
    def batch_kept(decode: Callable[[bytes], Any]) -> Callable[[], object]:
        return lambda: [decode(d) for d in data]

    def each_dropped(decode: Callable[[bytes], Any]) -> Callable[[], object]:
        def run() -> None:
            for d in data:
                decode(d)
        return run

    envelopes = NOTIFICATION_ENVELOPES.decode
    decoders: list[tuple[str, Callable[[bytes], Any]]] = [
        ("json.loads (stdlib)", json.loads), ("orjson.loads", orjson.loads),
        ("msgspec's pass alone (untyped payloads, no notification built)", envelopes),
        ("protocol.decode_pubsub (typed, checked)", decode_pubsub)]
    rows = []
    for label, method in (("batch kept", batch_kept), ("each dropped", each_dropped)):
        # Interleaved rounds, ratios taken within a round (pairwise), so a change in
        # the machine's load between rounds hits every decoder alike. The order turns
        # each round: a decoder timed right after another one has freed its memory
        # runs on different allocator state (orjson's batch-kept pass moved between
        # 1.9 and 2.35 us/frame with the decoder before it).
        times: dict[str, list[float]] = {name: [] for name, _ in decoders}
        for turn in range(6):
            for name, decoder in decoders[turn % 4:] + decoders[:turn % 4]:
                gc.collect()  # every decoder starts from the same collector state
                times[name].append(min(timeit.repeat(method(decoder), number=number,
                                                     repeat=runs)) / (number * len(data)))
        loads, oloads = times[decoders[0][0]], times[decoders[1][0]]
        for name, _ in decoders:
            own = times[name]
            vs_json = statistics.median(d / j for d, j in zip(own, loads, strict=True))
            vs_orjson = statistics.median(d / o for d, o in zip(own, oloads, strict=True))
            rows.append([f"{name}, {label}", f"{statistics.median(own) * 1e6:.2f}",
                         f"{vs_json:.2f}", f"{vs_orjson:.2f}"])
    size = statistics.mean(len(d) for d in data)
    return [*rows, ["frames", f"{len(data)} (mean {size:.0f} bytes)", "", ""]]


# --- 2b. actor hand-off ---------------------------------------------------------------------

def bench_inbox(runs: int, tells: int = 100_000) -> list[list[str]]:
    """A flood of tells into one actor: pykka's default inbox against the library's.

    The cost of a hand-off between two threads, which every batch of the
    managed path pays once per stage (actors/runtime/inbox.py says why it differs).
    """
    import pykka

    from actors.runtime.inbox import SimpleInboxActor

    class Count:
        def on_receive(self, message: Any) -> Any:
            return message

    class QueueInbox(Count, pykka.ThreadingActor):
        pass

    class SimpleInbox(Count, SimpleInboxActor):
        pass

    def flood(cls: type[pykka.ThreadingActor]) -> tuple[float, float]:
        ref = cls.start()
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(tells):
                ref.tell(i)
            ref.ask("done")  # answered after every tell before it
            return ((time.perf_counter() - wall) / tells * 1e6,
                    (time.process_time() - cpu) / tells * 1e6)
        finally:
            ref.stop()

    results: dict[str, list[tuple[float, float]]] = {"queue.Queue (pykka's default)": [],
                                                     "queue.SimpleQueue (actors.runtime.inbox)": []}
    for _ in range(runs):
        for out, cls in zip(results.values(), (QueueInbox, SimpleInbox), strict=True):
            out.append(flood(cls))
    return [[label, f"{statistics.median(w for w, _ in out):.2f}",
             f"{statistics.median(c for _, c in out):.2f}"] for label, out in results.items()]


# --- 3. recovery ---------------------------------------------------------------------------

def _events_until(session: ManagedBacktestSession, predicate: Callable[[Any], bool],
                  on_ready: bool = True) -> Any:
    while True:
        event = session.next_event(timeout=30)
        if on_ready and isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams())
        if predicate(event):
            return event


def _status_is(name: str, status: type) -> Callable[[Any], bool]:
    return lambda e: (isinstance(e, ConnectionChanged) and e.name == name
                      and isinstance(e.status, status))


def _time_to(session: ManagedBacktestSession, sim: LocalSimulator, fault: Callable[[], None],
             *conditions: Callable[[Any], bool]) -> float:
    """Milliseconds from an applied fault until each condition was met, in turn."""
    fault()
    sim.fault_counts()  # a round trip through the server loop: the fault is applied
    started = time.perf_counter()
    for condition in conditions:
        _events_until(session, condition)
    return (time.perf_counter() - started) * 1000


def bench_recovery(runs: int) -> list[list[str]]:
    control_ms, sub_ms, detect_ms = [], [], []
    with LocalSimulator(seed=3, slots=3000, liveness=SERVER_LIVENESS) as sim:
        first, _ = sim.available_range()
        session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                               CreateSession(first, first + 2900),
                                               timing=TIMING, policy=NO_DELAY)
        try:
            session.subscribe_transactions(list(sim.addresses))
            _events_until(session, lambda e: isinstance(e, ReadyForContinue), on_ready=False)
            session.send_continue(ContinueParams())
            for _ in range(runs):
                control_ms.append(_time_to(session, sim, lambda: sim.faults.drop("control"),
                                           _status_is("control", Up)))
            for _ in range(runs):
                sub_ms.append(_time_to(session, sim, lambda: sim.faults.drop("transactions"),
                                       _status_is("transactions", Up),
                                       lambda e: isinstance(e, Transaction)))
            for _ in range(runs):
                detect_ms.append(_time_to(session, sim, lambda: sim.faults.blackhole("control"),
                                          _status_is("control", Reconnecting)))
                _events_until(session, _status_is("control", Up))
        finally:
            session.shutdown()
    bound = (TIMING.keepalive_deadline + TIMING.keepalive_interval) * 1000
    return [
        ["control drop -> Up (first delay 0)", f"{statistics.median(control_ms):.1f}",
         f"{min(control_ms):.1f}–{max(control_ms):.1f}", "< 50 ms"],
        ["subscription drop -> first item after replay", f"{statistics.median(sub_ms):.1f}",
         f"{min(sub_ms):.1f}–{max(sub_ms):.1f}", ""],
        ["blackhole -> detected", f"{statistics.median(detect_ms):.1f}",
         f"{min(detect_ms):.1f}–{max(detect_ms):.1f}",
         f"<= {bound:.0f} ms (deadline {TIMING.keepalive_deadline * 1000:.0f} + interval "
         f"{TIMING.keepalive_interval * 1000:.0f})"],
    ]


# --- 4. scale -------------------------------------------------------------------------------

def bench_scale(counts: list[int], slots: int, rounds: int = 3) -> list[list[str]]:
    """N sessions at once in this process, both subscriptions each.

    Threads are counted once every link is Up and the short-lived connect
    threads have ended: the library's steady state (the bench's own driver
    threads, one per session, start after the count), and so are the objects
    the garbage collector tracks, which every full collection walks. RSS is
    measured after the run, while every session is still open. Every count
    runs ``rounds`` times, the counts taking turns; events/s is the median of
    its runs, and "× 100 sessions" the median of the ratios taken within each
    round: one run of 100 sessions is two or three seconds, and on the shared
    machine the speed of the same run moved by a quarter from one minute to
    the next.
    """
    rates: dict[int, list[float]] = {count: [] for count in counts}
    # count -> (threads, RSS growth, tracked objects) of its first run: later runs
    # reuse memory freed by the runs before them, so their growth says less.
    shape: dict[int, tuple[int, int, int]] = {}
    process = psutil.Process()
    # Three connections per session from one address: above the simulator's default limit.
    # The sessions keep alive on the client's default Timing (15 s / 45 s), so the server
    # finds dead peers on the same timing, as a real one does; with the local 1 s / 3 s,
    # 400 sessions in one process answered some pings too late and restarted by thousands.
    with simulator_process(seed=4, slots=4000, max_connections_per_client=3 * max(counts) + 16,
                           liveness=REAL_SERVER_LIVENESS) as url:
        chain = Chain(4, 4000)
        first, _ = chain.available_range()
        for _ in range(rounds):
            for count in counts:
                rate, threads, rss, tracked = _scale_run(url, chain, first, count, slots,
                                                         process)
                rates[count].append(rate)
                shape.setdefault(count, (threads, rss, tracked))
    rows = []
    for count in counts:
        threads, rss, tracked = shape[count]
        rate = statistics.median(rates[count])
        ratio = ""
        if 100 in rates and count >= 100:
            pairs = zip(rates[count], rates[100], strict=True)
            ratio = f"{statistics.median(r / b for r, b in pairs):.2f}"
        rows.append([str(count), str(threads), f"{threads / count:.2f}",
                     f"{rss / 2**20:.1f}", f"{rss / count / 2**20:.2f}", f"{tracked / count:.0f}",
                     f"{rate:,.0f} ({min(rates[count]):,.0f}–{max(rates[count]):,.0f})", ratio])
    return rows


def _scale_run(url: str, chain: Chain, first: int, count: int, slots: int,
               process: psutil.Process) -> tuple[float, int, int, int]:
    """One run of ``count`` sessions: (events/s, library threads, RSS growth, tracked objects)."""
    gc.collect()
    threads_before = threading.active_count()
    rss_before = process.memory_info().rss
    tracked_before = len(gc.get_objects())
    sessions = [ManagedBacktestSession.start(
        url, DEFAULT_API_KEY, CreateSession(first + 5 * i, first + 5 * i + slots),
        timing=Timing(), policy=ReconnectPolicy()) for i in range(count)]
    for session in sessions:
        session.subscribe_transactions(list(chain.addresses[:3]))
        session.subscribe_account_diffs(list(chain.addresses[3:]))
    _until(functools.partial(_all_up, sessions), 120, "every link up")
    _until(lambda: not any(t.name.startswith("connect-")
                           for t in threading.enumerate()), 30, "connect threads")
    threads = threading.active_count() - threads_before
    gc.collect()
    tracked = len(gc.get_objects()) - tracked_before - 1  # less the list itself
    totals = [0] * count
    started = time.perf_counter()
    workers = [threading.Thread(target=_drive, args=(s, totals, i))
               for i, s in enumerate(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    rss = process.memory_info().rss - rss_before
    for session in sessions:
        session.shutdown()
    return sum(totals) / elapsed, threads, rss, tracked


def _all_up(sessions: list[ManagedBacktestSession]) -> bool:
    return all(len(status := s.status()) == 3 and all(isinstance(v, Up)
                                                      for v in status.values())
               for s in sessions)


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; a bound, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _drive(session: ManagedBacktestSession, totals: list[int], index: int) -> None:
    while not isinstance(event := session.next_event(timeout=120), Completed):
        totals[index] += 1
        if isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=10))


# --- 5. sweeps ------------------------------------------------------------------------------

def bench_sweep(counts: list[int], slots: int) -> list[list[str]]:
    """N sessions through ``sweep`` (Ray, and this process) against the same N in a row."""
    import os
    import tempfile

    from actors.cli.sweep import Sweep, SweepConfig, SweepPlan
    from actors.cli.sweep.driver import LOOPBACK_RAY_ENV, ray_available
    from actors.cli.sweep.plan import RangeRule, SweepFile, resolve

    has_ray = ray_available()
    if has_ray:
        os.environ.setdefault(LOOPBACK_RAY_ENV, "0")
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    with simulator_process(seed=4, slots=6000) as url:
        chain = Chain(4, 6000)
        first, last = chain.available_range()
        for count in counts:
            specs = resolve(SweepFile((RangeRule(slots, None, count),), None, 10), first, last,
                            (tuple(chain.addresses[:2]), tuple(chain.addresses[2:4])))
            plan = SweepPlan(url, specs)
            rates = {}
            server_cpu: dict[str, float] = {}
            client_cpu: dict[str, float] = {}
            busy: dict[str, float] = {}
            server = next(p for p in psutil.Process().children()
                          if "protocol.simulator" in " ".join(p.cmdline()))
            for label, backend, concurrency in (("sequential", "in-process", 1),
                                                ("in-process", "in-process", count),
                                                ("ray", "ray", count)):
                if backend == "ray" and not has_ray:
                    rates[label] = float("nan")
                    continue
                cpu_before = sum(server.cpu_times()[:2])
                me_before = sum(psutil.Process().cpu_times()[:2])
                machine_before = psutil.cpu_times()
                with tempfile.TemporaryDirectory() as out:
                    summary = Sweep(SweepConfig(plan, url, DEFAULT_API_KEY, out, concurrency,
                                                backend=backend)).run()  # type: ignore[arg-type]
                assert summary["completed"] == count, summary["failed"]
                rates[label] = sum(summary["events"].values()) / summary["wall_time"]
                wall = summary["wall_time"]
                server_cpu[label] = (sum(server.cpu_times()[:2]) - cpu_before) / wall
                client_cpu[label] = (sum(psutil.Process().cpu_times()[:2]) - me_before) / wall
                machine = psutil.cpu_times()
                idle = machine.idle - machine_before.idle
                busy[label] = 1 - idle / (wall * (psutil.cpu_count() or 1))
            best = max(rates["in-process"], rates["ray"])
            rows.append([str(count), f"{rates['sequential']:,.0f}",
                         f"{rates['in-process']:,.0f}", f"{rates['ray']:,.0f}",
                         f"{best / rates['sequential']:.2f}",
                         *(" / ".join(f"{100 * d.get(k, 0):.0f}%" for k in (
                             "sequential", "in-process", "ray"))
                           for d in (server_cpu, client_cpu, busy))])
    if has_ray:
        ray.shutdown()
    return rows


# --- report --------------------------------------------------------------------------------

def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, under 2 minutes")
    parser.add_argument("--out", help="also write the tables to this file")
    parser.add_argument("--only", choices=("codec", "blast"),
                        help="only the codec table, or only the one against the blast server")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep table")
    parser.add_argument("--scale", type=int, nargs="*",
                        help="session counts of the scale table (default 1 10 100 500)")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 5
    # Throughput pairs: a run is one to two seconds, and on the shared machine the same
    # loop's rate moves by a tenth from one to the next, so the median needs more pairs.
    pairs = 5 if args.quick else 9
    started = time.monotonic()
    parts: list[str] = []

    def part(text: str) -> None:
        parts.append(text)
        print(text, flush=True)  # as it comes: a long run shows its progress

    if args.only == "codec":
        part(table("Codec (µs per frame)", ["decoder", "µs/frame", "× json.loads",
                                             "× orjson.loads"], bench_codec(runs)))
        return 0
    if args.only == "blast":
        part(table("Against the blast server (notifications/s; scripts/blast_server.py)",
                   ["path", "median", "range", "CPU µs/notification (client process)"],
                   bench_blast(pairs, 40 if args.quick else 60, 2500)))
        return 0
    if not args.sweep_only:
        part(f"Machine: {psutil.cpu_count()} cores, Python {sys.version.split()[0]}; "
             f"`python scripts/bench.py{' --quick' if args.quick else ''}`\n")
        # The codec first, in a process no session has run in yet: what the
        # throughput runs leave to the garbage collector shifted its ratios.
        part(table("Codec (µs per frame)",
                   ["decoder", "µs/frame", "× json.loads", "× orjson.loads"],
                   bench_codec(runs)))
        part(table("Actor hand-off (a flood of 100,000 tells into one actor)",
                   ["inbox", "µs per tell, wall", "µs per tell, CPU"], bench_inbox(runs)))
        part(table("Throughput (notifications/s through the client)",
                   ["path", "median", "range"],
                   bench_throughput(pairs, 30 if args.quick else 60, 2000)))
        part(table("Against the blast server (notifications/s; scripts/blast_server.py)",
                   ["path", "median", "range", "CPU µs/notification (client process)"],
                   bench_blast(pairs, 40 if args.quick else 60, 2500)))
        part(table("Recovery (ms)", ["what", "median", "range", "goal"],
                   bench_recovery(runs)))
        part(table("Scale (sessions in one process, both subscriptions each)",
                   ["sessions", "threads (library)", "threads/session", "RSS MiB after run",
                    "RSS MiB/session", "GC-tracked objects/session",
                    "events/s total (median, range)", "× 100 sessions (pairwise median)"],
                   bench_scale(args.scale or ([1, 10, 100, 500] if args.quick
                                              else [1, 10, 50, 100, 500]),
                               80)))
    # Last: the sweep on Ray starts Ray's driver threads in this process, and they
    # stay; run before the other tables, they took a third off the managed figures.
    sweep_table = table(
        f"Sweep (events/s in total; N sessions of {150 if args.quick else 300} slots, advance 10, "
        "both subscriptions)",
        ["sessions", "one after another", "sweep, this process (K=N)", "sweep, Ray (K=N)",
         "speed-up", "server CPU (seq / process / Ray)", "driver process CPU",
         "machine busy (2 cores = 100%)"], bench_sweep([1, 4, 16], 150 if args.quick else 300))
    print(sweep_table, flush=True)
    parts.append(sweep_table)
    report = "\n".join(parts) + f"\n(total {time.monotonic() - started:.0f} s)\n"
    print(f"(total {time.monotonic() - started:.0f} s)")
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
