"""The process's one timer thread: shared by sessions, every timer cancelled on shutdown."""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any

from actors.runtime import timers
from actors.runtime.timers import Scheduler, timer_threads
from protocol.simulator import LocalSimulator
from tests.support.harness import Recorder, no_leaks, start, wait_for


def _timer_thread_names() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "backtest-timers"]


def test_leases_share_one_thread_and_the_last_one_stops_it() -> None:
    with no_leaks(2.0):
        before = threading.active_count()
        leases = [Scheduler() for _ in range(20)]
        assert threading.active_count() == before + 1
        assert timer_threads() == 1
        for lease in leases[:-1]:
            lease.stop()
        assert timer_threads() == 1  # one lease still holds it
        leases[-1].stop()
        assert timer_threads() == 0
        assert threading.active_count() == before  # joined by the last stop()
        leases[-1].stop()  # idempotent


def test_a_stopped_lease_never_fires_and_the_others_do() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(2.0):
            a, b = Scheduler(), Scheduler()
            cancelled = a.schedule(0.05, recorder, "a-early")
            b.schedule(0.0, recorder, "b-now")
            b.schedule(0.15, recorder, "b-late")
            wait_for(lambda: recorder.ask("get") == ["b-now"], 2.0, "b's first timer")
            a.stop()
            assert not cancelled.cancelled  # the lease, not the handle, holds it back
            assert a.schedule(0.0, recorder, "a-after-stop").cancelled
            # The heap is in time order and one thread tells: b's later timer arriving
            # proves a's earlier one was passed over, not just slow.
            wait_for(lambda: recorder.ask("get") == ["b-now", "b-late"], 2.0, "b's timer")
            b.stop()
        assert recorder.ask("get") == ["b-now", "b-late"]
    finally:
        recorder.stop()


def test_a_cancelled_handle_never_fires() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(2.0):
            lease = Scheduler()
            lease.schedule(0.02, recorder, "cancelled").cancel()
            lease.schedule(0.05, recorder, "kept")
            wait_for(lambda: recorder.ask("get") == ["kept"], 2.0, "the kept timer")
            lease.stop()
    finally:
        recorder.stop()


def test_stopped_leases_do_not_grow_the_heap() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(2.0):
            keeper = Scheduler()
            for _ in range(2000):
                lease = Scheduler()
                lease.schedule(60.0, recorder, "far")  # an uptime check a minute away
                lease.schedule(60.0, recorder, "far")
                lease.stop()
            core = timers._current
            assert core is not None
            assert len(core.heap) <= 2 * timers._COMPACT_MIN
            keeper.stop()
        assert recorder.ask("get") == []
    finally:
        recorder.stop()


def test_sessions_share_the_timer_thread_and_leave_nothing() -> None:
    with LocalSimulator(seed=5, slots=100) as sim, no_leaks(3.0):
        first, _ = sim.available_range()
        sessions = [start(sim, first, first + 20) for _ in range(3)]
        try:
            assert _timer_thread_names() == ["backtest-timers"]
        finally:
            for session in sessions:
                session.shutdown()
        assert timer_threads() == 0


def _heap_truth(core: Any) -> tuple[int, int, int]:
    """(entries, really dead entries, counted dead) under the core's lock."""
    with core.condition:
        dead = sum(1 for e in core.heap if e[3].stopped or e[2].cancelled)
        return len(core.heap), dead, core.dead_entries


def test_concurrent_cancels_fires_and_lease_stops_keep_the_heap_exact() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            anchor = Scheduler()  # keeps the timer thread through the churn
            fired_after_cancel: list[Any] = []
            stop = threading.Event()

            def churn(seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    lease = Scheduler()
                    handles = [lease.schedule(rng.choice([0.0, 0.0005, 0.002, 30.0]),
                                              recorder, None) for _ in range(200)]
                    rng.shuffle(handles)
                    for h in handles[:150]:
                        h.cancel()
                        h.cancel()  # twice: counted once
                    if rng.random() < 0.5:
                        lease.stop()
                    for h in handles[:150]:
                        if h.pending:
                            fired_after_cancel.append(h)
                    if not lease.stopped:
                        for h in handles[150:]:
                            h.cancel()
                        lease.stop()

            workers = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
            for w in workers:
                w.start()
            deadline = time.monotonic() + 3.0
            worst = 0
            while time.monotonic() < deadline:
                size, _, _ = _heap_truth(anchor._core)
                worst = max(worst, size)
                time.sleep(0.01)
            stop.set()
            for w in workers:
                w.join(10)
                assert not w.is_alive()
            core = anchor._core
            size, dead, counted = _heap_truth(core)
            assert fired_after_cancel == []
            assert anchor.pending == 0
            # The count of dead entries is what the heap holds.
            assert (size, dead) == (dead, dead)
            assert counted == dead, (size, dead, counted, worst)
            anchor.stop()
            assert timers.timer_threads() == 0
    finally:
        recorder.stop()


def test_a_cancel_never_lets_a_far_timer_fire() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            # Far: due after the cancels are surely done (on a loaded 2-core machine six
            # threads took over 0.3 s to cancel 3000), so any that fires is a defect.
            far = 2.0
            started = time.monotonic()
            lease = Scheduler()
            handles = [lease.schedule(far, recorder, i) for i in range(3000)]
            barrier = threading.Barrier(6)

            def cancel(part: list[Any]) -> None:
                barrier.wait(5)
                for h in part:
                    h.cancel()

            threads = [threading.Thread(target=cancel, args=(handles[i::6],))
                       for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert not any(h.pending for h in handles)
            assert lease.pending == 0
            size, dead, counted = _heap_truth(lease._core)
            assert size <= timers._COMPACT_MIN * 4 and counted == dead == size
            cancelled_in = time.monotonic() - started
            assert cancelled_in < far, f"3000 cancels took {cancelled_in:.2f}s"
            late = Scheduler()  # another lease, so stop() does not clear the heap
            # Due just after the far timers were: had one survived, it fired first.
            marker = late.schedule(far + 0.1 - cancelled_in, recorder, "marker")
            wait_for(lambda: "marker" in recorder.ask("get"), far + 3, "the marker")
            assert recorder.ask("get") == ["marker"]
            assert not marker.pending
            lease.stop()
            late.stop()
    finally:
        recorder.stop()


def test_dead_entry_count_matches_the_heap_after_concurrent_cancels() -> None:
    """Cancels from 4 threads (some entries due now, some in a minute): once every
    cancel has returned, the count of dead entries is the number of dead entries."""
    recorder = Recorder.start()
    try:
        with no_leaks(3.0):
            lease = Scheduler()
            core = lease._core
            deadline = time.monotonic() + 5.0
            rounds, mismatch = 0, None
            switch = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)  # thread switches inside the short windows
            while time.monotonic() < deadline and mismatch is None:
                rounds += 1
                handles = [lease.schedule(0.0 if i % 2 else 60.0, recorder, None)
                           for i in range(4000)]
                go = threading.Barrier(4)

                def cancel(part: list[Any], go: Any = go) -> None:
                    go.wait(2)
                    for h in part:
                        h.cancel()

                threads = [threading.Thread(target=cancel, args=(handles[i::4],))
                           for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(5)
                _, dead, counted = _heap_truth(core)
                if counted != dead:
                    mismatch = (rounds, dead, counted)
            sys.setswitchinterval(switch)
            lease.stop()
        assert mismatch is None, f"round {mismatch[0]}: {mismatch[1]} dead entries in " \
            f"the heap, {mismatch[2]} counted"
    finally:
        recorder.stop()
