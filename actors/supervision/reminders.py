"""The timer messages the supervisor sends itself (restarts, uptime, shutdown, quiet window)."""

from __future__ import annotations

import attrs


@attrs.frozen
class RestartChild:  # the timer messages the supervisor sends itself
    name: str
    generation: int
    permit: str | None = None  # the token the policy's ReconnectGate granted this restart


@attrs.frozen
class UptimeCheck:
    name: str
    generation: int


@attrs.frozen
class ShutdownDeadline:
    """``Timing.graceful_close`` after a shutdown: stop what did not close."""


@attrs.frozen
class QuietCheck:
    """The quiet window after a re-attach ended: was the continue in flight lost?"""

    generation: int
