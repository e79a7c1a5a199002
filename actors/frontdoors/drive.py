"""The ready -> continue loop, written once.

``ManagedBacktestSession.run``, the command line's ``run`` and each session of a
sweep all do the same thing: take events until ``Completed``, answer every
``ReadyForContinue`` with a continue, and decide what a ``ContinueLost`` the
session did not resend means. They differ in what they do *around* it (journal
each event, write a continue ahead into the journal, show progress, poll so a
worker can be stopped), so :class:`Drive` is the loop and those are its hooks.
A hook may raise to end the loop; the caller catches what it raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol import ContinueParams

from ..events import Completed, ContinueLost, ManagedEvent, ReadyForContinue

if TYPE_CHECKING:
    from .blocking import ManagedBacktestSession

OnEvent = Callable[[ManagedEvent], ContinueParams | None]


class Drive:
    """Drive ``session`` to its end, ``advance`` produced blocks per continue.

    ``on_event`` (optional) sees every event first; what it returns for a
    ``ReadyForContinue`` (or an unresent ``ContinueLost``), if it is a
    ``ContinueParams``, is sent instead of the default. ``timeout`` bounds each
    wait for an event and for a continue to be written (None: as long as the
    session lives); without an :meth:`idle` hook a wait that runs out raises
    ``TimeoutError``.
    """

    def __init__(self, session: ManagedBacktestSession, advance: int = 1, *,
                 on_event: OnEvent | None = None, timeout: float | None = None) -> None:
        self.session = session
        self.default = ContinueParams(advance_count=advance)
        self.timeout = timeout
        self._on_event = on_event

    def run(self) -> Completed | None:
        """Until ``Completed`` (returned), or None once :meth:`stopped` says so."""
        while not self.stopped():
            try:
                event = self.next_event()
            except TimeoutError as quiet:
                self.idle(quiet)
                continue
            answer = self.event(event)
            params = answer if isinstance(answer, ContinueParams) else None
            if isinstance(event, ReadyForContinue):
                self.continue_with(params or self.default)
            elif isinstance(event, ContinueLost) and not event.resent:
                self.lost(event, params)
            elif isinstance(event, Completed):
                return event
        return None

    def continue_with(self, params: ContinueParams) -> None:
        """Send one continue: :meth:`before_continue` first (a write-ahead record)."""
        self.before_continue(params)
        self.send_continue(params)

    # --- hooks ------

    def next_event(self) -> ManagedEvent:
        return self.session.next_event(timeout=self.timeout)

    def event(self, event: ManagedEvent) -> ContinueParams | None:
        """Every event, before the loop acts on it."""
        return self._on_event(event) if self._on_event is not None else None

    def before_continue(self, params: ContinueParams) -> None:
        """Right before a continue is handed over."""

    def send_continue(self, params: ContinueParams) -> None:
        self.session.send_continue(params, timeout=self.timeout)

    def lost(self, event: ContinueLost, params: ContinueParams | None) -> None:
        """A continue lost in flight that the session handed back (``on_lost_continue=
        "raise"``): sent again by default (``params``: what ``on_event`` returned)."""
        self.continue_with(params or event.params)

    def idle(self, quiet: TimeoutError) -> None:
        """No event within ``timeout``: the loop goes on if this returns (by default it
        raises ``quiet``, the wait's own error)."""
        raise quiet

    def stopped(self) -> bool:
        """Asked before each event: True ends the loop (it returns None)."""
        return False
