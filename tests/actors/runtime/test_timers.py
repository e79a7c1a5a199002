"""The process's one timer thread: shared by sessions, every timer cancelled on shutdown."""

from __future__ import annotations

import threading

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
