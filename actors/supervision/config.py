"""SessionConfig: everything a session's supervisor needs to know before it starts.

One frozen value instead of a dozen keyword arguments, so the facade, the
application-actor setup and the tests build a session the same way, and the
supervisor's constructor stays glue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from protocol import CreateSession, ReconnectPolicy, Timing

from ..decisions.cursor import Cursor
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import ConnectionChanged
from ..requests import SubscribeStream
from ..runtime.connection import DEFAULT_MAX_FRAME_SIZE

# Events held for a slow consumer. Not more: under the GIL the readers run
# ahead of the consumer up to this bound, so it is about how many events are
# always in flight, and every one that outlives a young collection is walked by
# the garbage collector's full collections. 1024 (16 ms of a 60,000/s stream)
# gave 2.5x fewer full collections than 4096 and more throughput (scripts/BENCHMARKS.md).
DEFAULT_MAX_QUEUE = 1024
LINKS_PER_SESSION = 3  # control + transactions + account diffs
# Events the blocking facade may take per round trip. They leave the outbox, so
# the links' windows share max_queue minus this (memory stays bounded).
TAKE_BATCH = 128


@attrs.frozen
class SessionConfig:
    """What to connect to and with which bounds; see ``ManagedBacktestSession.start``."""

    url: str
    api_key: str = attrs.field(repr=False)  # never logged
    create: CreateSession
    policy: ReconnectPolicy = attrs.field(factory=ReconnectPolicy)
    timing: Timing = attrs.field(factory=Timing)
    max_queue: int = DEFAULT_MAX_QUEUE
    sslopt: dict[str, Any] | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD
    on_lost_continue: LostContinuePolicy = "resend"
    # Told each connection change while start() waits (retries are visible before the
    # session exists); runs on the supervisor's thread, so it must be quick. Its
    # exceptions are the session's (a bug there fails the session as "internal").
    on_starting: Callable[[ConnectionChanged], None] | None = None
    # Attach to this cursor's session instead of creating one (``create`` is its range).
    resume: Cursor | None = None
    # Subscribed as the session is named, before its first ReadyForContinue is delivered.
    subscriptions: tuple[SubscribeStream, ...] = ()
    # False: no control connection (a subscription handle watching a session that
    # someone else drives); ``resume`` then names the session and the replay slots.
    control: bool = True
    # False: Completed leaves the control connection (and the session on the server)
    # open until shutdown, for subscribers in other processes (a control handle).
    close_at_completed: bool = True
    # A sub-session of a parallel session: its control link is a port on this
    # ParallelHub (actors.supervision.parallel_hub), not a socket of its own.
    control_hub: Any = None

    @property
    def window(self) -> int:
        """Undelivered frames each link may hold: ``max_queue`` less one take batch."""
        return max(1, (self.max_queue - min(TAKE_BATCH, self.max_queue // 2))
                   // LINKS_PER_SESSION)
