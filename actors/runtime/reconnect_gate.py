"""Reconnect storms: one gate that bounds how many restarts run at once in a process.

When a server goes away, every session of a sweep loses every connection at
the same moment; without a bound all of them hammer the server together when
it comes back. :class:`ReconnectPolicy` lets each outage make its first
``ungated_attempts`` restarts freely (a lone blip recovers at full speed);
after those a restart asks the policy's ``gate`` for a permit, held from the
spawn of the new connection until it is Up or lost again (the supervisor
releases it). This is the in-process gate; :mod:`actors.cli.sweep.ray_gate` is the
same contract across the processes of a Ray sweep.

Tokens start with the session id (``<session id>/<link>/<generation>/...``),
so a log record about a permit names its session. A permit is *leased*: one
held longer than ``lease`` seconds (its holder died without releasing it, or
hangs) is taken back, so a lost holder can delay the others by at most one
lease. A small daemon thread reclaims expired leases;
:meth:`LocalReconnectGate.close` stops it and grants nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

log = logging.getLogger("backtest_actors.storm")

DEFAULT_LEASE = 30.0  # seconds a permit may be held: above connect + one handshake answer


class LocalReconnectGate:
    """At most ``limit`` permits out at once; waiters are served first come, first served."""

    def __init__(self, limit: int, *, lease: float = DEFAULT_LEASE) -> None:
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit: expected an integer >= 1, got {limit!r}")
        if not lease > 0:
            raise ValueError(f"lease: expected seconds > 0, got {lease!r}")
        self.limit, self.lease = limit, lease
        self._held: dict[Hashable, float] = {}  # token -> lease deadline
        self._waiting: OrderedDict[Hashable, Callable[[], None]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self.counts = {"granted": 0, "waited": 0, "expired": 0, "peak_held": 0}

    def request(self, token: Hashable, grant: Callable[[], None]) -> None:
        with self._cond:
            if self._closed or token in self._held or token in self._waiting:
                return
            if len(self._held) >= self.limit or self._waiting:
                self.counts["waited"] += 1
                self._waiting[token] = grant
                return
            ready = [self._give(token, grant)]
        self._call(ready)

    def release(self, token: Hashable) -> None:
        with self._cond:
            self._waiting.pop(token, None)
            if self._held.pop(token, None) is None:
                return
            ready = self._serve()
        self._call(ready)

    def held(self) -> int:
        with self._cond:
            return len(self._held)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {**self.counts, "held": len(self._held), "waiting": len(self._waiting),
                    "limit": self.limit}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=2.0)

    # --- under the lock ------

    def _give(self, token: Hashable, grant: Callable[[], None]) -> Callable[[], None]:
        self._held[token] = time.monotonic() + self.lease
        self.counts["granted"] += 1
        self.counts["peak_held"] = max(self.counts["peak_held"], len(self._held))
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="reconnect-gate",
                                            daemon=True)
            self._reaper.start()
        self._cond.notify_all()
        return grant

    def _serve(self) -> list[Callable[[], None]]:
        ready = []
        while self._waiting and len(self._held) < self.limit and not self._closed:
            token, grant = self._waiting.popitem(last=False)
            ready.append(self._give(token, grant))
        return ready

    def _reap(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [t for t, deadline in self._held.items() if deadline <= now]
                for token in expired:
                    del self._held[token]
                    self.counts["expired"] += 1
                    log.warning("reconnect permit %s held past its %.1fs lease; taken back",
                                token, self.lease,
                                extra={"session_id": str(token).split("/", 1)[0]})
                ready = self._serve()
                if not ready:
                    wait = min(self._held.values(), default=now + self.lease) - now
                    self._cond.wait(max(0.01, wait))
            self._call(ready)

    @staticmethod
    def _call(grants: list[Callable[[], None]]) -> None:
        for grant in grants:  # outside the lock: a grant may release at once
            try:
                grant()
            except Exception:  # noqa: BLE001 - one holder's bug must not stop the others
                log.exception("reconnect gate: a grant callback failed")
