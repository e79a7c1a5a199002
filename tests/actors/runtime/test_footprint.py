"""What a running session keeps: nothing that its steps have finished with.

At hundreds of sessions in one process, every object a session keeps is walked
by each full collection of the garbage collector, so a session must not hold
on to what it used once: the connect threads that have ended, the upgrade's
websocket-client object, and the connect and handshake deadlines of steps
that completed (cancelled, and dropped from the timer heap). Each test here
fails against the code before this was done.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import websocket

from actors.runtime import timers
from actors.runtime.timers import Scheduler
from actors.supervision.link_actor import ConnectDeadline, HandshakeDeadline
from protocol import Timing
from protocol.simulator import LocalSimulator
from tests.support.harness import Recorder, no_leaks, start, wait_for

# Deadlines far beyond the test, so an entry still in the heap is one nobody cancelled.
LONG_STEPS = Timing(connect=30.0, handshake=30.0, keepalive_interval=0.05,
                    keepalive_deadline=0.25, graceful_close=1.0)


def _all_up(session: Any) -> bool:
    status = session.status()
    return len(status) == 3 and all(type(s).__name__ == "Up" for s in status.values())


def _connect_threads_and_clients() -> tuple[int, int]:
    gc.collect()
    objects = gc.get_objects()
    return (sum(isinstance(o, threading.Thread) and o.name.startswith("connect-")
                for o in objects),
            sum(isinstance(o, websocket.WebSocket) for o in objects))


def test_an_open_session_keeps_no_connect_thread_or_upgrade_client() -> None:
    with LocalSimulator(seed=11, slots=200) as sim, no_leaks(3.0):
        first, _ = sim.available_range()
        before = _connect_threads_and_clients()
        session = start(sim, first, first + 50)
        try:
            session.subscribe_transactions(list(sim.addresses[:2]))
            session.subscribe_account_diffs(list(sim.addresses[2:4]))
            wait_for(lambda: _all_up(session), 5.0, "three links up")
            wait_for(lambda: not any(t.name.startswith("connect-")
                                     for t in threading.enumerate()), 5.0, "connects ended")
            # Three connections were made; none of their threads or clients is kept.
            assert _connect_threads_and_clients() == before
        finally:
            session.shutdown()


def test_completed_steps_leave_no_live_deadline_in_the_timer_heap() -> None:
    with LocalSimulator(seed=12, slots=200) as sim, no_leaks(3.0):
        first, _ = sim.available_range()
        session = start(sim, first, first + 50, timing=LONG_STEPS)
        try:
            session.subscribe_transactions(list(sim.addresses[:3]))
            session.subscribe_account_diffs(list(sim.addresses[3:]))
            wait_for(lambda: _all_up(session), 5.0, "three links up")
            core = timers._current
            assert core is not None
            with core.condition:
                entries = list(core.heap)
            steps = [e for e in entries if isinstance(e[5], ConnectDeadline | HandshakeDeadline)]
            # Every link connected and finished its handshake: each deadline it set
            # (one connect, and one per awaited answer) was cancelled as its step
            # completed, 30 s before it would have fired.
            assert steps, "the links set step deadlines"
            assert [e[5] for e in steps if not e[2].cancelled] == []
        finally:
            session.shutdown()


def test_cancelled_timers_are_dropped_from_the_heap_before_their_time() -> None:
    recorder = Recorder.start()
    try:
        with no_leaks(2.0):
            lease = Scheduler()
            kept = [lease.schedule(0.05 + i * 0.001, recorder, f"kept-{i}") for i in range(10)]
            for _ in range(2000):
                lease.schedule(60.0, recorder, "far").cancel()
            core = timers._current
            assert core is not None
            with core.condition:
                size = len(core.heap)
            # Dead entries are compacted once they are a quarter of the heap.
            assert size <= max(timers._COMPACT_MIN, 10 * 4 // 3 + 1) + 10
            wait_for(lambda: len(recorder.ask("get")) == 10, 2.0, "the kept timers")
            assert recorder.ask("get") == [f"kept-{i}" for i in range(10)]
            assert not any(handle.pending for handle in kept)  # fired
            lease.stop()
        assert "far" not in recorder.ask("get")
    finally:
        recorder.stop()
