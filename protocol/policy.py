"""Timing values and the reconnect backoff policy.

Names follow the reference crate's ``managed`` module. Where the crate's value
is not public (managed-behavior.md §1 marks them [P]) the value below is the
reference notes' proposal, and every one of them is configurable through
:class:`Timing` / :class:`ReconnectPolicy` rather than patched.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import attrs

CONNECT_TIMEOUT = 30.0
# > 100 s: management may park a subscribe upgrade during a cold start (reference §1).
HANDSHAKE_RESPONSE_TIMEOUT = 180.0
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_MISS_DEADLINE = 45.0  # roughly three missed pings
GRACEFUL_CLOSE_TIMEOUT = 10.0

RECONNECT_INITIAL_BACKOFF = 0.5
RECONNECT_BACKOFF_MULTIPLIER = 2.0
RECONNECT_MAX_BACKOFF = 30.0
RECONNECT_JITTER = 0.2
RECONNECT_MAX_ATTEMPTS = 10
RECONNECT_MAX_TOTAL = 300.0  # below the 900 s disconnect timeout, or the server drops us first
RECONNECT_UPTIME_RESET = 60.0
# Restarts of one outage that go without asking a ReconnectGate (the reference's
# ReconnectCoordinator value): a lone blip recovers at full speed, a storm queues.
RECONNECT_UNGATED_ATTEMPTS = 5


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name}: expected a number > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name}: expected a number >= 0, got {value!r}")


@attrs.frozen
class Timing:
    """Every time bound of a connection's lifecycle, in seconds (websockets' style: each
    knob with its default and what it costs).

    * ``connect=30``: the whole of TCP + TLS + WebSocket upgrade, however slowly the
      server answers. Shorter finds a dead host sooner; too short fails slow links.
    * ``handshake=180``: each create / attach / resume / subscribe answer. A real
      server may park an upgrade for over 100 s on a cold start.
    * ``keepalive_interval=15``: a WebSocket ping this often on each connection.
      Costs one small frame each way per interval.
    * ``keepalive_deadline=45``: a connection with no inbound frame (pongs count)
      for this long is dead and restarted. Shorter finds a silent (blackholed)
      connection sooner, at the risk of restarting a slow but live one; must
      exceed ``keepalive_interval``.
    * ``graceful_close=10``: the close request, its answer and the close frame;
      also bounds ``shutdown()`` (plus about a second).
    * ``continue_quiet=None``: after a re-attach, how long nothing new proves a
      continue in flight was lost (None: ``keepalive_deadline``). Shorter
      resends sooner; too short could resend a continue the server is still
      running (counted as a double advance, never hidden).

    ``LocalSimulator.timing`` is the set that suits a simulator on this machine.
    """

    # The whole connect (TCP + TLS + WebSocket upgrade), not each socket read.
    connect: float = attrs.field(default=CONNECT_TIMEOUT, validator=_positive)
    handshake: float = attrs.field(default=HANDSHAKE_RESPONSE_TIMEOUT, validator=_positive)
    keepalive_interval: float = attrs.field(default=KEEPALIVE_INTERVAL, validator=_positive)
    keepalive_deadline: float = attrs.field(default=KEEPALIVE_MISS_DEADLINE, validator=_positive)
    graceful_close: float = attrs.field(default=GRACEFUL_CLOSE_TIMEOUT, validator=_positive)
    # How long a re-attached session may stay silent about a continue written on
    # the dead connection before it counts as lost (None: keepalive_deadline).
    continue_quiet: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive))

    @property
    def quiet_window(self) -> float:
        """``continue_quiet``, or ``keepalive_deadline`` when it is not set."""
        return self.keepalive_deadline if self.continue_quiet is None else self.continue_quiet

    @keepalive_deadline.validator
    def _deadline_after_interval(self, _a: attrs.Attribute[float], value: float) -> None:
        if value <= self.keepalive_interval:
            raise ValueError(
                "keepalive_deadline: must exceed keepalive_interval "
                f"({self.keepalive_interval}), got {value}"
            )


class ReconnectGate(Protocol):
    """Bounds how many restarts run at once across many sessions (a reconnect storm).

    ``request(token, grant)`` asks for a permit; ``grant()`` is called once,
    from any thread, when it is given (perhaps at once). ``release(token)``
    returns it, or withdraws a request not yet granted; releasing twice or an
    unknown token does nothing. Implementations bound how long a permit may be
    held (a holder that died must not block the rest forever).
    """

    def request(self, token: Hashable, grant: Callable[[], None]) -> None:
        """Ask for a permit for ``token``; ``grant()`` is called once it is given."""

    def release(self, token: Hashable) -> None:
        """Give the permit of ``token`` back, or withdraw its request."""


@attrs.frozen
class ReconnectPolicy:
    """Exponential backoff with multiplicative jitter and two budgets.

    Knobs: ``initial=0.5`` (seconds before the first restart), ``multiplier=2``,
    ``max_delay=30`` (the longest wait between attempts), ``jitter=0.2`` (+-20 %,
    so many clients do not reconnect in step), ``max_attempts=10`` and
    ``max_total=300`` (seconds; the budget of one outage: past either the
    session fails), ``uptime_reset=60`` (Up this long starts a fresh budget),
    ``rng=None`` (``random.Random(seed)`` for a deterministic schedule). A
    longer budget survives longer outages and takes longer to report a dead
    server. ``gate=None`` (a :class:`ReconnectGate` shared by many sessions:
    after ``ungated_attempts=5`` restarts of an outage each restart waits for one
    of its permits; the cost is a slower recovery in a storm, the gain a server
    that is not hammered by every session at once).

    ``delay(attempt)`` is pure given ``rng``: ``min(initial * multiplier**(attempt-1),
    max_delay) * (1 + jitter * u)`` with ``u`` uniform in ``[-1, 1]``. An outage
    ends in failure when ``exhausted(attempt, elapsed)`` says so: either
    ``max_attempts`` restarts were made or ``max_total`` seconds have passed
    since the outage began.

    **The defaults outlive a half-open owner.** When the client's side of the
    control connection dies silently (NAT timeout, dead host), the server keeps
    the old connection as the session's owner until its own keepalive finds it
    dead: up to its deadline plus one ping interval, 45 + 15 = 60 s with the
    real defaults. Until then every re-attach is answered
    ``sessionOwnershipBusy`` (retryable). Restart ``n`` comes after the delays
    1..n (0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30 s), at 0.5, 1.5, 3.5, 7.5, 15.5,
    31.5, 61.5, 91.5, 121.5 and 151.5 s after the loss; with the full -20 %
    jitter restart 8 still comes at 73.2 s. So restarts 8 to 10 always come
    after the server released the owner (each attempt's own connect time only
    adds to that), and ``max_total`` (300 s) is far beyond it. A shorter policy must keep
    ``sum(delays) > server deadline + interval`` to survive a half-open owner.
    """

    initial: float = attrs.field(default=RECONNECT_INITIAL_BACKOFF, validator=_non_negative)
    multiplier: float = attrs.field(default=RECONNECT_BACKOFF_MULTIPLIER, validator=_positive)
    max_delay: float = attrs.field(default=RECONNECT_MAX_BACKOFF, validator=_non_negative)
    jitter: float = attrs.field(default=RECONNECT_JITTER, validator=_non_negative)
    max_attempts: int = attrs.field(default=RECONNECT_MAX_ATTEMPTS)
    max_total: float = attrs.field(default=RECONNECT_MAX_TOTAL, validator=_positive)
    uptime_reset: float = attrs.field(default=RECONNECT_UPTIME_RESET, validator=_positive)
    rng: random.Random | None = attrs.field(default=None, eq=False)
    # Shared by the sessions of a sweep: restarts after the first ``ungated_attempts``
    # of an outage wait for one of its permits (None: never gated).
    gate: ReconnectGate | None = attrs.field(default=None, eq=False)
    ungated_attempts: int = attrs.field(default=RECONNECT_UNGATED_ATTEMPTS)

    @jitter.validator
    def _jitter_below_one(self, _a: attrs.Attribute[float], value: float) -> None:
        if value >= 1:
            raise ValueError(f"jitter: expected a fraction in [0, 1), got {value!r}")

    @max_attempts.validator
    def _attempts(self, _a: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 1:
            raise ValueError(f"max_attempts: expected an integer >= 1, got {value!r}")

    @ungated_attempts.validator
    def _ungated(self, _a: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 0:
            raise ValueError(f"ungated_attempts: expected an integer >= 0, got {value!r}")

    def gated(self, attempt: int) -> bool:
        """Restart ``attempt`` must wait for a permit of :attr:`gate`."""
        return self.gate is not None and attempt > self.ungated_attempts

    def base_delay(self, attempt: int) -> float:
        """The delay before restart ``attempt`` (1-based), before jitter."""
        if attempt < 1:
            raise ValueError(f"attempt: expected >= 1, got {attempt}")
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        exponent = min(attempt - 1, 1024)
        try:
            raw = self.initial * self.multiplier**exponent
        except OverflowError:
            raw = float("inf")
        return min(raw, self.max_delay)

    def delay(self, attempt: int) -> float:
        """The delay before restart ``attempt`` (1-based), jitter included."""
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        u = (self.rng or random).uniform(-1.0, 1.0)
        return base * (1.0 + self.jitter * u)

    def exhausted(self, attempt: int, outage_elapsed: float) -> bool:
        """True when restart ``attempt`` may not be made (budget spent)."""
        return attempt > self.max_attempts or outage_elapsed >= self.max_total
