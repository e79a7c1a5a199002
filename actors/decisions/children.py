"""Children: the supervisor's connection actors and their restart budgets.

A plain class (no threads, no sockets): which generation of each link is the
live one, what status the application was last told, and what the
:class:`ReconnectPolicy` says after a loss (restart after a delay, or give up).
The supervisor turns the answers into actor starts and timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from protocol import ReconnectPolicy

from ..events import CONTROL, Connecting, ConnectionStatus, ErrorKind, Up

if TYPE_CHECKING:  # a timer is only cancelled here
    from ..runtime.timers import TimerHandle

# Tells a link's actor a message: (its ref, the message); False once that actor is gone.
Send = Callable[[Any, Any], bool]


@attrs.define
class Child:
    name: str
    ref: Any = None  # the live link's actor ref: opaque here, used only through ``send``
    generation: int = 0
    status: ConnectionStatus = attrs.field(factory=Connecting)
    attempt: int = 0
    outage_started: float | None = None
    restarts: int = 0
    timer: TimerHandle | None = None
    paused: bool = False  # its reader is out of credits (the application is behind)


@attrs.frozen
class Restart:
    attempt: int
    delay: float


@attrs.frozen
class GiveUp:
    kind: ErrorKind
    reason: str


@attrs.frozen
class StayClosed:
    """Nothing left to fetch on this link (the session completed)."""



class Children(dict[str, Child]):
    """Name -> :class:`Child`, with the policy's restart arithmetic."""

    def __init__(self, policy: ReconnectPolicy, send: Send) -> None:
        super().__init__()
        self._policy = policy
        self._send = send
        self._retired: dict[str, int] = {}  # name -> last generation of a removed link

    def add(self, name: str) -> Child:
        # A link added again after remove() continues its generations, so a late
        # report from the old link is never taken for the new one's.
        self[name] = Child(name, generation=self._retired.pop(name, 0))
        return self[name]

    def remove(self, name: str) -> Child:
        """Forget the link of ``name`` (unsubscribed); its reports are stale from now on."""
        child = self.pop(name)
        self._retired[name] = child.generation
        if child.timer:
            child.timer.cancel()
        return child

    def current(self, name: str, generation: int) -> bool:
        """A report from this generation of ``name`` is about the live link."""
        child = self.get(name)
        return child is not None and child.generation == generation

    def lost(self, name: str, reason: str, now: float, *, terminal: bool, created: bool,
             create_written: bool, completed: bool) -> Restart | GiveUp | StayClosed:
        """The live link of ``name`` was lost: restart it after a delay, or give up.

        A create request is never written twice (the reference's rule: retry
        connects, never re-send Create): a control link lost after writing it,
        before the session was named, fails the start.
        """
        child = self[name]
        child.ref = None
        kind: ErrorKind = ("subscription_failed" if name != CONTROL
                           else "control_failed" if created else "create")
        if terminal or (name == CONTROL and not created and create_written):
            return GiveUp(kind, reason)
        if completed:
            return StayClosed()
        attempt = child.attempt + 1
        started = child.outage_started if child.outage_started is not None else now
        if self._policy.exhausted(attempt, now - started):
            return GiveUp(kind, f"{reason}; reconnect budget spent after {attempt - 1} "
                          f"restarts in {now - started:.1f}s")
        child.attempt, child.outage_started = attempt, started
        child.restarts += 1
        return Restart(attempt, self._policy.delay(attempt))

    def stayed_up(self, name: str, generation: int) -> None:
        """Up for ``uptime_reset``: the next loss starts a fresh budget."""
        child = self[name]
        if child.generation == generation and isinstance(child.status, Up):
            child.attempt = 0
            child.outage_started = None

    def tell(self, name: str, message: Any) -> bool:
        """Tell the live link of ``name``; False when there is none."""
        child = self.get(name)
        if child is None or child.ref is None:
            return False
        return self._send(child.ref, message)

    def tell_all(self, message: Any) -> None:
        for name in self:
            self.tell(name, message)

    def set_status(self, name: str, status: ConnectionStatus) -> bool:
        """Record ``status``; True when it changed (the application is told)."""
        child = self[name]
        changed = child.status != status
        child.status = status
        return changed

    def flow(self, name: str, generation: int, paused: bool) -> None:
        if self.current(name, generation):
            self[name].paused = paused

    def all_up(self) -> bool:
        return all(isinstance(c.status, Up) for c in self.values())

    def alive(self) -> list[Any]:
        return [c.ref for c in self.values() if c.ref is not None]

    def cancel_timers(self) -> None:
        for child in self.values():
            if child.timer:
                child.timer.cancel()

    def stats(self) -> dict[str, Any]:
        return {"reconnects": {name: c.restarts for name, c in self.items()},
                "paused": {name: c.paused for name, c in self.items()}}
