"""One scheduler thread per process for every delayed ``tell`` of every session.

pykka has no timers. Keepalive pings, liveness checks, handshake deadlines and
restart backoff all become "tell this actor that message after this delay",
served by a single thread with a heap, instead of a thread per timer.

The thread is shared by all sessions of the process (a sweep runs hundreds):
a thread per session cost a thread and a stack for work that is a few heap
operations a second. Each session holds a :class:`Scheduler`, a lease on the
shared thread: it starts the thread if none runs, and its ``stop()`` cancels
every timer the session set (none of them fires afterwards) and, when it was
the last lease, stops and joins the thread, so a process without sessions has
no timer thread (threads after shutdown == threads before).

A ``tell`` never blocks (pykka's inbox is unbounded), so one slow actor cannot
delay another session's timers.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

import pykka

# Dead entries (of stopped leases, or cancelled) are dropped from the heap once they
# are this many and at least a quarter of it, so sessions coming and going never grow
# it (a timer of a stopped session may be an uptime check a minute away), and a
# cancelled deadline does not stay for its whole delay. A compaction is linear, and
# each one removes at least a quarter of the heap: a few entries' work per cancel.
_COMPACT_MIN = 64


class TimerHandle:
    """One delayed tell. ``cancel()`` keeps it from firing, and counts its heap
    entry as dead so a compaction drops it before its time: a link cancels its
    connect and handshake deadlines as each step completes, and at hundreds of
    sessions those entries, left to expire, were a tenth of what every full
    collection of the garbage collector walked."""

    __slots__ = ("cancelled", "_lease")

    def __init__(self) -> None:
        self.cancelled = False
        self._lease: Scheduler | None = None  # set while its entry waits in the heap

    @property
    def pending(self) -> bool:
        """Waiting to fire: neither fired nor cancelled (nor its lease stopped)."""
        lease = self._lease
        return lease is not None and not lease.stopped

    def cancel(self) -> None:
        lease = self._lease
        if lease is None:
            self.cancelled = True  # fired, or never in the heap: nothing to count
        else:
            lease._forget(self)  # flags and counts it under the heap's lock


_Entry = tuple[float, int, TimerHandle, "Scheduler", "pykka.ActorRef[Any]", Any]


class _TimerThread:
    """The heap and the thread; one lives while at least one lease is held."""

    def __init__(self, name: str) -> None:
        self.heap: list[_Entry] = []
        self.counter = itertools.count()
        self.condition = threading.Condition()
        self.leases = 0
        self.dead_entries = 0  # entries of stopped leases or cancelled handles in the heap
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def push(self, entry: _Entry) -> None:
        # Called with self.condition held.
        heapq.heappush(self.heap, entry)
        if self.heap[0] is entry:
            self.condition.notify()

    def compact(self) -> None:
        # Called with self.condition held.
        if self.dead_entries >= _COMPACT_MIN and self.dead_entries * 4 >= len(self.heap):
            self.heap = [e for e in self.heap if not e[3].stopped and not e[2].cancelled]
            heapq.heapify(self.heap)
            self.dead_entries = 0

    def _run(self) -> None:
        while True:
            with self.condition:
                while not self.stopped:
                    now = time.monotonic()
                    if self.heap and self.heap[0][0] <= now:
                        break
                    wait = self.heap[0][0] - now if self.heap else None
                    self.condition.wait(wait)
                if self.stopped:
                    return
                _, _, handle, lease, ref, message = heapq.heappop(self.heap)
                if lease.stopped or handle.cancelled:
                    self.dead_entries = max(0, self.dead_entries - 1)
                    continue
                lease.pending -= 1
                handle._lease = None
            if not handle.cancelled:
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass  # the actor ended before its timer; nothing to do


_lock = threading.Lock()
_current: _TimerThread | None = None


class Scheduler:
    """A session's lease on the process's timer thread.

    ``schedule`` delivers ``ref.tell(message)`` after ``delay`` seconds;
    ``stop()`` cancels this lease's timers and releases the thread (joined
    when this was the last lease). The name of the thread is the first
    lease's ``name``.
    """

    def __init__(self, name: str = "backtest-timers") -> None:
        global _current
        self.stopped = False
        self.pending = 0  # entries of this lease in the heap (guarded by the core's lock)
        with _lock:
            if _current is None:
                _current = _TimerThread(name)
                _current.thread.start()
            self._core = _current
            with self._core.condition:
                self._core.leases += 1

    def schedule(self, delay: float, ref: pykka.ActorRef[Any], message: Any) -> TimerHandle:
        handle = TimerHandle()
        core = self._core
        with core.condition:
            if self.stopped:
                handle.cancel()
                return handle
            handle._lease = self
            self.pending += 1
            core.push((time.monotonic() + max(0.0, delay), next(core.counter), handle, self,
                       ref, message))
        return handle

    def _forget(self, handle: TimerHandle) -> None:
        """``handle`` was cancelled: its entry is dead (see :meth:`TimerHandle.cancel`)."""
        core = self._core
        with core.condition:
            # Flagged under the lock, with the count: a compaction or the timer
            # thread seeing the flag first would drop the entry, and counting it
            # afterwards would count an entry that is gone.
            handle.cancelled = True
            if handle._lease is None:
                return  # fired meanwhile, or already forgotten
            handle._lease = None
            if self.stopped:
                return  # stop() counted this lease's entries dead already
            self.pending -= 1
            core.dead_entries += 1
            core.compact()

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel this lease's timers; the last lease stops and joins the thread."""
        global _current
        core = self._core
        with _lock:
            with core.condition:
                if self.stopped:
                    return
                self.stopped = True
                core.dead_entries += self.pending
                self.pending = 0
                core.leases -= 1
                last = core.leases == 0
                if last:
                    core.stopped = True
                    core.heap.clear()
                    core.condition.notify()
                else:
                    core.compact()
            if last and _current is core:
                _current = None  # the next lease starts a fresh thread
        if last and threading.current_thread() is not core.thread:
            core.thread.join(timeout)


def timer_threads() -> int:
    """How many timer threads this process runs now (0 or 1): for tests and the bench."""
    with _lock:
        return 0 if _current is None else 1
