"""Resume handshakes as the server sees them: how many reconnects ran at once.

A reconnect storm is judged where it lands, at the server: each connection
whose first request resumes something (a control ``Attach``, a PubSub
subscribe with ``replayFromSlot``) is one resume handshake, from the moment
its WebSocket upgrade was accepted until that first request was answered. The
peak number of such intervals that overlapped is what a sweep's reconnect
gate bounds (its permits cover a longer span: from the client's connect until
the link is up). Kept as a bounded list of intervals, on the server's loop.
"""

from __future__ import annotations

from collections import deque

HANDSHAKE_HISTORY = 10_000  # intervals kept (a soak's worth); older ones are dropped


class ResumeHandshakes:
    def __init__(self) -> None:
        self._intervals: deque[tuple[float, float]] = deque(maxlen=HANDSHAKE_HISTORY)
        self.count = 0

    def record(self, opened: float, answered: float) -> None:
        self.count += 1
        self._intervals.append((opened, answered))

    def peak(self) -> int:
        """The most resume handshakes that were under way at one moment."""
        edges = sorted([(start, 1) for start, _ in self._intervals]
                       + [(end, -1) for _, end in self._intervals])
        peak = current = 0
        for _, step in edges:  # at equal times an end (-1) sorts before a start
            current += step
            peak = max(peak, current)
        return peak

    def as_dict(self) -> dict[str, int]:
        return {"resume_handshakes": self.count, "peak_concurrent_resumes": self.peak()}
