"""Chaos soak: N managed sessions against one local simulator, under every fault kind.

    python scripts/soak.py --sessions 20 --slots 300 --seed 7

Each session replays its own range with both subscriptions while faults of
every kind the simulator has are injected (seeded): abrupt drops and
blackholes at random slots, malformed frames, refused connects, delayed
handshakes, 503 answers to upgrades, and continues lost in flight. Prints a
markdown table and exits 1 if anything was lost without a gap report,
duplicated, double-advanced or leaked (or a session failed).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import pykka  # noqa: E402

from actors import (  # noqa: E402
    AccountDiff,
    Completed,
    DiscoveryBatch,
    Gap,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedParallelSession,
    ManagedSessionError,
    Paused,
    ReadyForContinue,
    Slot,
    Transaction,
)
from protocol import (  # noqa: E402
    ContinueParams,
    CreateSession,
    DiscoveryFilter,
    ReconnectPolicy,
    Timing,
)
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator, ServerLiveness  # noqa: E402
from protocol.simulator.chain import user_transaction  # noqa: E402
from protocol.simulator.proxy import FaultProxy  # noqa: E402

PARALLEL_SUBS = 2  # sub-sessions per parallel session (--parallel)
PROXY_KINDS = ("reset", "half_open", "blackhole", "latency", "slicer", "bandwidth")

TIMING = Timing(connect=2, handshake=3, keepalive_interval=0.1, keepalive_deadline=0.6,
                graceful_close=2, continue_quiet=0.3)
MALFORMED = ['{"method":"slotNotification"', "[]", b"\xff\xfe", '{"jsonrpc":"2.0","result":"x"}',
             '{"method":"status","params":{"status":1}}']


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        # The server finds a dead peer within a second, as a real one would in 60 s.
        # --parallel: each driver runs one parallel session of PARALLEL_SUBS sub-sessions
        # of --slots slots each, over one control connection.
        self.span = args.slots * (PARALLEL_SUBS if args.parallel else 1)
        self.sim = LocalSimulator(seed=args.seed, slots=self.span * 3 + 50,
                                  liveness=ServerLiveness(keepalive_interval=0.2,
                                                          keepalive_deadline=0.8),
                                  parallel_split=args.slots)
        self.proxies: dict[int, FaultProxy] = {}  # one per session: control faults too
        self.proxies_lock = threading.Lock()
        self.proxy_faults: dict[str, int] = dict.fromkeys(PROXY_KINDS, 0)
        self.results: dict[int, dict[str, Any]] = {}
        self.peak_threads = threading.active_count()
        self.peak_rss = 0
        self.done = threading.Event()
        self.scheduled = 0  # slot-armed faults (counted by the simulator once applied)
        first, last = self.sim.available_range()
        self._tx_slots = {tx.signature: slot for slot in self.sim.chain.produced_in(first, last)
                          for tx in self.sim.chain.block(slot)}

    def run(self) -> int:
        baseline_threads = threading.active_count()
        baseline_actors = len(pykka.ActorRegistry.get_all())
        self.sim.start()
        monitor = threading.Thread(target=self._monitor, daemon=True)
        monitor.start()
        started = time.monotonic()
        drivers = [threading.Thread(target=self._session, args=(i,), name=f"driver-{i}")
                   for i in range(self.args.sessions)]
        for driver in drivers:
            driver.start()
        injectors = [threading.Thread(target=self._inject_global, daemon=True),
                     threading.Thread(target=self._inject_network, daemon=True)]
        for injector in injectors:
            injector.start()
        for driver in drivers:
            driver.join()
        self.done.set()
        for injector in injectors:
            injector.join()
        monitor.join()
        wall = time.monotonic() - started
        faults = self.sim.fault_counts()
        self.sim.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (
                threading.active_count() > baseline_threads
                or len(pykka.ActorRegistry.get_all()) > baseline_actors):
            time.sleep(0.01)
        leaked_threads = threading.active_count() - baseline_threads
        leaked_actors = len(pykka.ActorRegistry.get_all()) - baseline_actors
        return self._report(faults, wall, leaked_threads, leaked_actors)

    def _monitor(self) -> None:
        process = psutil.Process()
        while not self.done.wait(0.05):
            self.peak_threads = max(self.peak_threads, threading.active_count())
            self.peak_rss = max(self.peak_rss, process.memory_info().rss)

    def _inject_global(self) -> None:
        """Faults that hit whoever connects next: refusals, 503s, slow handshakes."""
        rng = random.Random(self.args.seed + 1)
        kinds = ["refuse", "http_status", "delay_handshake"]
        budget = max(3, self.args.faults // 4)
        count = 0
        while budget > 0 and not self.done.wait(rng.uniform(0.05, 0.3)):
            kind = kinds[count % len(kinds)]  # every kind, in turn
            count += 1
            if kind == "refuse":
                self.sim.faults.refuse(rng.uniform(0.05, 0.3))
            elif kind == "http_status":
                self.sim.faults.http_status(503, rng.choice(["control", "subscriptions"]))
            else:
                self.sim.faults.delay_handshake(rng.uniform(0.05, 0.4),
                                                rng.choice(["control", "subscriptions"]))
            budget -= 1

    def _inject_network(self) -> None:
        """Faults of the network between client and server, through each session's
        proxy: resets, half-open connections, blackholes, and for a moment latency,
        tiny TCP segments or a bandwidth cap. Neither end is told."""
        rng = random.Random(self.args.seed + 2)
        count = 0
        toxic_until: list[tuple[float, FaultProxy]] = []
        live_count = self.args.sessions
        # About one network fault per session every 1.5 s, however many are left: a
        # link must be able to stay up long enough to make progress.
        while not self.done.wait(rng.uniform(1.0, 2.0) / max(1, live_count)):
            now = time.monotonic()
            for until, proxy in [t for t in toxic_until if t[0] <= now]:
                toxic_until.remove((until, proxy))
                with contextlib.suppress(Exception):  # its session may have ended
                    proxy.clear_toxics()
            with self.proxies_lock:
                live = list(self.proxies.values())
            live_count = len(live)
            if not live:
                continue
            proxy = rng.choice(live)
            kind = PROXY_KINDS[count % len(PROXY_KINDS)]  # every kind, in turn
            count += 1
            which: Any = rng.choice(["control", "pubsub", "all"])
            try:
                if kind == "reset":
                    proxy.reset(which, side=rng.choice(["client", "upstream", "both"]))
                elif kind == "half_open":
                    proxy.half_open(which, side=rng.choice(["client", "upstream"]))
                elif kind == "blackhole":
                    proxy.blackhole(which)
                else:
                    if kind == "latency":
                        proxy.latency(rng.uniform(5, 40))
                    elif kind == "slicer":
                        proxy.slicer(1, 8)
                    else:
                        proxy.bandwidth(rng.uniform(20_000, 200_000))
                    toxic_until.append((now + rng.uniform(0.05, 0.2), proxy))
            except Exception:  # noqa: BLE001 - the proxy closed with its session
                continue
            self.proxy_faults[kind] += 1

    def _session(self, index: int) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        first, last = self.sim.available_range()
        start = rng.randint(first, last - self.span)
        end = start + self.span - 1
        addresses = list(self.sim.addresses)
        txs, diffs = rng.sample(addresses, 2), rng.sample(addresses, 2)
        policy = ReconnectPolicy(initial=0.02, max_delay=0.5, max_attempts=30, max_total=60,
                                 uptime_reset=2.0, rng=random.Random(index))
        proxy = FaultProxy("127.0.0.1", self.sim.port).start()
        try:
            if self.args.parallel:
                self._parallel(index, rng, proxy, start, end, txs, diffs, policy)
            else:
                result = self._result(index, rng, start, end, txs, diffs)
                self._drive(index, rng, proxy, start, end, txs, diffs, policy, result)
        finally:
            with self.proxies_lock:
                self.proxies.pop(index, None)
            proxy.close()

    def _result(self, key: int, rng: random.Random, start: int, end: int, txs: list[str],
                diffs: list[str]) -> dict[str, Any]:
        # --discover: every session pauses before each batch of one program and injects a
        # probe there; its pauses and discoveries are checked against the chain too.
        discover = [rng.choice(self.sim.programs[1:])] if self.args.discover else []
        inject = [user_transaction([txs[0]], f"soak {key}")] if discover else []
        expected = self.sim.expected(start, end, transactions=txs, account_diffs=diffs,
                                     discover=discover, inject=inject)
        result: dict[str, Any] = {"expected": expected, "events": [], "failed": None,
                                  "discover": discover, "inject": inject}
        self.results[key] = result
        return result

    def _parallel(self, index: int, rng: random.Random, proxy: FaultProxy, start: int,
                  end: int, txs: list[str], diffs: list[str], policy: ReconnectPolicy) -> None:
        """One parallel session; each sub-session driven on a thread of its own."""
        try:
            parallel = ManagedParallelSession.start(proxy.url_for(self.sim.url),
                                                    DEFAULT_API_KEY, CreateSession(start, end),
                                                    timing=TIMING, policy=policy)
        except ManagedSessionError as exc:
            self.results[index * PARALLEL_SUBS] = {"failed": str(exc)}
            return
        try:
            threads = []
            for k, sub in enumerate(parallel.take_sub_sessions()):
                low, high = sub.range
                key = index * PARALLEL_SUBS + k
                result = self._result(key, random.Random(key), low, high, txs, diffs)
                threads.append(threading.Thread(target=self._drive, args=(
                    index, random.Random(key), proxy, low, high, txs, diffs, policy, result,
                    sub), name=f"driver-{index}-{k}"))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            parallel.shutdown()

    def _drive(self, index: int, rng: random.Random, proxy: FaultProxy, start: int, end: int,
               txs: list[str], diffs: list[str], policy: ReconnectPolicy,
               result: dict[str, Any], opened: ManagedBacktestSession | None = None) -> None:
        expected = result["expected"]
        events: list[ManagedEvent] = result["events"]
        try:
            create = CreateSession(start, end, discoveries=[
                DiscoveryFilter(p) for p in result["discover"]])
            session = opened or ManagedBacktestSession.start(
                proxy.url_for(self.sim.url), DEFAULT_API_KEY, create, timing=TIMING,
                policy=policy)
        except ManagedSessionError as exc:
            result["failed"] = str(exc)
            return
        # Network faults from now on: a create lost in flight is never re-sent (it
        # could create a second session), so it fails start() by design.
        with self.proxies_lock:
            self.proxies[index] = proxy
        try:
            session.subscribe_transactions(txs)
            session.subscribe_account_diffs(diffs)
            sid = session.session_info.session_id
            self._arm(rng, sid, expected.slots)
            readies = 0
            lose_at = set(rng.sample(range(2, 40), self.args.lost_continues))
            ahead: list[DiscoveryBatch] = []
            while True:
                event = session.next_event(timeout=120)
                events.append(event)
                if isinstance(event, DiscoveryBatch):
                    ahead.append(event)
                if isinstance(event, ReadyForContinue | Paused):
                    readies += 1
                    if readies in lose_at:  # the server resets the socket, continue unread
                        self.sim.faults.lose_next_continue(session_id=sid)
                    inject = result["inject"] if isinstance(event, Paused) else []
                    if isinstance(event, Paused):
                        here = (event.slot, event.batch_index)
                        ahead = [d for d in ahead if (d.slot, d.batch_index) > here]
                    if ahead:
                        session.send_continue_to(ahead[0].continue_to(tuple(inject)))
                    else:
                        session.send_continue(ContinueParams(
                            advance_count=rng.choice([1, 2, 5]), transactions=inject))
                elif isinstance(event, Completed):
                    break
            result["stats"] = session.stats()
            result["server"] = self.sim.session_stats(sid)
        except (ManagedSessionError, TimeoutError) as exc:
            result["failed"] = f"{type(exc).__name__}: {exc}"
        finally:
            session.shutdown()

    def _slot_of(self, item: Any) -> int:
        signature = item[0] if isinstance(item, tuple) else item
        return self._tx_slots[signature]

    def _arm(self, rng: random.Random, session_id: str, slots: list[int]) -> None:
        per_session = max(1, (self.args.faults - self.args.faults // 4) // self.args.sessions)
        targets = ["control", "transactions", "account_diffs"]
        for slot in rng.sample(slots[2:-2], min(per_session, len(slots) - 4)):
            kind = rng.choices(["drop", "blackhole", "malformed"], [5, 1, 2])[0]
            target: Any = rng.choice(targets)
            if kind == "drop":
                self.sim.faults.drop(target, at_slot=slot, session_id=session_id)
            elif kind == "blackhole":
                self.sim.faults.blackhole(target, at_slot=slot, session_id=session_id)
            else:
                self.sim.faults.malformed(target, frame=rng.choice(MALFORMED), at_slot=slot,
                                          session_id=session_id)

    def _report(self, faults: dict[str, int], wall: float, leaked_threads: int,
                leaked_actors: int) -> int:
        completed = failed = 0
        expected_total = delivered_total = missing = duplicated = 0
        continues = advances = double_advances = reconnects = lost_continues = 0
        gaps_reported = missing_unreported = 0
        pauses_expected = pauses_reached = stepping_mismatches = 0
        failures: list[str] = []
        gap_lines: list[str] = []
        for index, result in sorted(self.results.items()):
            if result["failed"]:
                failed += 1
                failures.append(f"session {index}: {result['failed']}")
                continue
            completed += 1
            exp = result["expected"]
            events = result["events"]
            got: dict[str, list[Any]] = {
                "slots": [e.slot for e in events if isinstance(e, Slot)],
                "txs": [e.signature for e in events if isinstance(e, Transaction)],
                "diffs": [e.key for e in events if isinstance(e, AccountDiff)],
            }
            want = {"slots": exp.slots, "txs": exp.signatures, "diffs": exp.diff_keys}
            if result["discover"]:
                got["discoveries"] = [(e.slot, e.batch_index) for e in events
                                      if isinstance(e, DiscoveryBatch)]
                got["pauses"] = [(e.slot, e.batch_index) for e in events
                                 if isinstance(e, Paused)]
                want["discoveries"] = want["pauses"] = exp.discoveries
                pauses_expected += len(exp.discoveries)
                pauses_reached += len(got["pauses"])
                stepping_mismatches += (got["discoveries"] != exp.discoveries) + (
                    got["pauses"] != exp.discoveries)
            gaps = [e for e in events if isinstance(e, Gap)]
            gaps_reported += len(gaps)
            gap_lines += [f"session {index}: gap on {g.stream}, slots {g.first_slot}..="
                          f"{g.last_slot} ({g.slots} slots)" for g in gaps]
            stream_of = {"txs": "transactions", "diffs": "account_diffs"}
            for key in want:
                expected_total += len(want[key])
                delivered_total += len(got[key])
                lost = set(want[key]) - set(got[key])
                missing += len(lost)
                missing_unreported += sum(
                    1 for item in lost if not any(
                        g.stream == stream_of.get(key) and g.first_slot
                        <= self._slot_of(item) <= g.last_slot for g in gaps))
                duplicated += len(got[key]) - len(set(got[key]))
            stats, server = result["stats"], result["server"]
            # Every chunk that reached the server was written once by the client; a
            # chunk lost in flight was written again (counted in both).
            continues += stats.chunks_written - stats.lost_continues
            lost_continues += stats.lost_continues
            advances += server.continues_received
            reconnects += sum(stats.reconnects.values())
            if (stats.double_advances
                    or server.blocks_executed != len(exp.slots) - 1):
                double_advances += 1
        injected = sum(v for k, v in faults.items() if k != "connection_limit")
        rows = [
            ("sessions completed / failed", f"{completed} / {failed}"),
            *((f"faults injected: {k}", str(v)) for k, v in sorted(faults.items())),
            ("faults injected: total", str(injected)),
            *((f"proxy faults: {k}", str(v)) for k, v in self.proxy_faults.items()),
            ("proxy faults: total", str(sum(self.proxy_faults.values()))),
            ("reconnects", str(reconnects)),
            ("events expected / delivered (slots, txs, diffs)",
             f"{expected_total} / {delivered_total}"),
            ("missing", str(missing)),
            ("gaps reported", str(gaps_reported)),
            ("missing without a gap report", str(missing_unreported)),
            ("lost continues recovered", str(lost_continues)),
            ("duplicated", str(duplicated)),
            ("continues (chunks) received / server-side advances",
             f"{continues} / {advances}"),
            ("double advances", str(double_advances)),
            *((("pauses expected / reached", f"{pauses_expected} / {pauses_reached}"),
               ("discoveries or pauses out of order, lost or twice",
                str(stepping_mismatches))) if self.args.discover else ()),
            ("peak threads", str(self.peak_threads)),
            ("peak RSS", f"{self.peak_rss / 2**20:.0f} MiB"),
            ("threads left after shutdown", str(leaked_threads)),
            ("actors left after shutdown", str(leaked_actors)),
            ("wall time", f"{wall:.1f} s"),
        ]
        print(f"soak: {self.args.sessions} sessions x {self.args.slots} slots, "
              f"seed {self.args.seed}\n")
        print("| what | value |\n|---|---|")
        for what, value in rows:
            print(f"| {what} | {value} |")
        for line in failures + gap_lines:
            print(f"\n{line}")
        # A reported gap is the library keeping its word (only possible when a
        # session may run past the replay buffer); a silent hole never is.
        bad = (failed or missing_unreported or duplicated or double_advances or leaked_threads
               or stepping_mismatches
               or leaked_actors or completed == 0 or continues != advances)
        return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--slots", type=int, default=300)
    parser.add_argument("--faults", type=int, default=160, help="about how many to inject")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parallel", action="store_true",
                        help=f"each driver runs one parallel session of {PARALLEL_SUBS} "
                             "sub-sessions of --slots slots over one control connection")
    parser.add_argument("--discover", action="store_true",
                        help="each session pauses before every batch of one program (continue-"
                             "to) and injects a probe there; pauses and discoveries are checked")
    parser.add_argument("--lost-continues", type=int, default=2,
                        help="continues lost in flight per session")
    return Soak(parser.parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
