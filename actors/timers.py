"""One scheduler thread for every delayed ``tell`` of a session.

pykka has no timers. Keepalive pings, liveness checks, handshake deadlines and
restart backoff all become "tell this actor that message after this delay",
served by a single thread with a heap, instead of a thread per timer.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

import pykka


class TimerHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Delivers ``ref.tell(message)`` after ``delay`` seconds; ``stop()`` joins the thread."""

    def __init__(self, name: str = "backtest-timers") -> None:
        self._heap: list[tuple[float, int, TimerHandle, pykka.ActorRef[Any], Any]] = []
        self._counter = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule(self, delay: float, ref: pykka.ActorRef[Any], message: Any) -> TimerHandle:
        handle = TimerHandle()
        with self._condition:
            if self._stopped:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay),
                                        next(self._counter), handle, ref, message))
            self._condition.notify()
        return handle

    def stop(self, timeout: float = 2.0) -> None:
        with self._condition:
            self._stopped = True
            self._heap.clear()
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._condition.wait(wait)
                if self._stopped:
                    return
                _, _, handle, ref, message = heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass  # the actor ended before its timer; nothing to do
