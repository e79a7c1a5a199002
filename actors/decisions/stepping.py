"""DiscoveryTracker: which announced batch is the next one to pause before.

A plain class fed the events the application receives, in order. The server
announces a discovered batch ahead of execution (a ``DiscoveryBatch`` event),
before the answer that brings the session to rest; a continue may run past an
announced batch without stopping. So the next batch to pause before is the
oldest announcement still ahead of where the session rests; with none, there
are no more discoveries (the server would have announced the next one before
this rest). This is the reference's ``advance_to_discovery`` decision
(simulator-client ``transaction_step.rs``), kept in one place for every front
door and the command line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs

from protocol import ContinueToParams

from ..events import (
    Completed,
    ContinueLost,
    DiscoveryBatch,
    Error,
    ManagedEvent,
    Paused,
    ReadyForContinue,
    Slot,
)


class DiscoveryTracker:
    """Announced discoveries not yet passed, and where the session rests."""

    def __init__(self) -> None:
        self._ahead: deque[DiscoveryBatch] = deque()
        self.last_slot = -1
        self.paused_at: tuple[int, int | None] | None = None
        self.at_rest = False  # a ReadyForContinue or Paused came since the last continue
        self.discoveries = 0
        self.pauses = 0

    def seen(self, event: ManagedEvent) -> None:
        """An event the application received."""
        if isinstance(event, DiscoveryBatch):
            self.discoveries += 1
            self._ahead.append(event)
        elif isinstance(event, Slot):
            self.last_slot = max(self.last_slot, event.slot)
            self._drop_passed()
        elif isinstance(event, Paused):
            self.pauses += 1
            self.paused_at, self.at_rest = (event.slot, event.batch_index), True
            self._drop_passed()
        elif isinstance(event, ReadyForContinue):
            self.paused_at, self.at_rest = None, True
            self._drop_passed()
        elif isinstance(event, Error) or (isinstance(event, ContinueLost)
                                          and not event.resent):
            # It answered the continue (or handed it back): the session did not move.
            self.at_rest = True

    @classmethod
    def resumed(cls, last_slot: int, paused_at: tuple[int, int | None] | None,
                ahead: tuple[tuple[int, int], ...], at_rest: bool) -> DiscoveryTracker:
        """The tracker a cursor describes (:attr:`ahead_points`, ...)."""
        tracker = cls()
        tracker.last_slot, tracker.paused_at, tracker.at_rest = last_slot, paused_at, at_rest
        tracker._ahead.extend(DiscoveryBatch(slot, index) for slot, index in ahead)
        return tracker

    @property
    def ahead_points(self) -> tuple[tuple[int, int], ...]:
        """``(slot, batch_index)`` of the announcements not yet passed (for a cursor)."""
        self._drop_passed()
        return tuple((d.slot, d.batch_index) for d in self._ahead)

    def continued(self) -> None:
        """A continue or continue-to was sent: the session is no longer at rest."""
        self.at_rest = False

    def next_discovery(self) -> DiscoveryBatch | None:
        """The next announced batch ahead of the session, or None (no more)."""
        self._drop_passed()
        return self._ahead[0] if self._ahead else None

    def _drop_passed(self) -> None:
        while self._ahead and not self._ahead_of_rest(self._ahead[0]):
            self._ahead.popleft()

    def _ahead_of_rest(self, batch: DiscoveryBatch) -> bool:
        if self.paused_at is not None:
            slot, index = self.paused_at
            # Paused right before it: reached (pausing there again would be refused).
            return (batch.slot, batch.batch_index) > (slot, index if index is not None else 0)
        return batch.slot > self.last_slot


def ends_step(event: ManagedEvent) -> bool:
    """The answer that ends a step of ``advance_to_discovery``: the pause, the end of the
    range, an error answering the continue-to, or a continue-to handed back as lost."""
    return isinstance(event, Paused | Completed | Error) or (
        isinstance(event, ContinueLost) and not event.resent)


@attrs.frozen
class DiscoveryStep:
    """What ``advance_to_discovery`` did: paused before ``discovery`` (``paused`` is the
    answer), or found no more discoveries (``discovery`` None: the session rests
    where it was; go on with ``send_continue``). ``events``: every event it took
    meanwhile, in order, the ``DiscoveryBatch`` and ``Paused`` included: nothing
    is lost by letting it pump the session."""

    discovery: DiscoveryBatch | None
    paused: Paused | None
    events: tuple[ManagedEvent, ...] = ()

    @property
    def exhausted(self) -> bool:
        """No discovery was left ahead of the session (the reference's ``Completed``)."""
        return self.discovery is None


class StepInProgress:
    """One ``advance_to_discovery``, for every front door: it takes the events, feeds
    them here, and sends what :meth:`request` says; the sync and asyncio loops differ
    only in how they wait.

    Until the session rests, events are taken; at rest, the next announced batch is
    the continue-to to send (none: the step is ``exhausted``); then events are taken
    until its answer (:func:`ends_step`). ``events`` holds everything taken, so a
    front door whose wait is cut short can give them back.
    """

    def __init__(self, stepping: DiscoveryTracker, transactions: Iterable[str]) -> None:
        if isinstance(transactions, str | bytes):
            raise TypeError("transactions: expected a list of base64 strings, got one string")
        # Checked before any event is taken: a bad one must not cost the application events.
        self._transactions = ContinueToParams(0, 0, transactions).transactions
        self._stepping = stepping
        self._discovery: DiscoveryBatch | None = None
        self.events: list[ManagedEvent] = []
        self.result: DiscoveryStep | None = None

    def request(self) -> ContinueToParams | None:
        """The continue-to to send now (asked once), or None: take another event (or the
        step is over: :attr:`result`)."""
        if self.result is not None or self._discovery is not None or not self._stepping.at_rest:
            return None
        self._discovery = self._stepping.next_discovery()
        if self._discovery is None:
            self.result = DiscoveryStep(None, None, tuple(self.events))
            return None
        return self._discovery.continue_to(self._transactions)

    def feed(self, event: ManagedEvent) -> None:
        """An event the front door took (and applied to the tracker)."""
        self.events.append(event)
        if self._discovery is None and isinstance(event, Completed):
            self.result = DiscoveryStep(None, None, tuple(self.events))
        elif self._discovery is not None and ends_step(event):
            self.result = DiscoveryStep(self._discovery,
                                        event if isinstance(event, Paused) else None,
                                        tuple(self.events))
