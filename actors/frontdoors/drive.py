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

import attrs

from protocol import ContinueParams, ContinueToParams

from ..decisions.stepping import DiscoveryTracker
from ..events import Completed, ContinueLost, ManagedEvent, Paused, ReadyForContinue

if TYPE_CHECKING:
    from .blocking import ManagedBacktestSession

AnyContinue = ContinueParams | ContinueToParams
OnEvent = Callable[[ManagedEvent], AnyContinue | None]


class Drive:
    """Drive ``session`` to its end, ``advance`` produced blocks per continue.

    ``on_event`` (optional) sees every event first; what it returns for a
    ``ReadyForContinue`` (or an unresent ``ContinueLost``), if it is a
    ``ContinueParams``, is sent instead of the default. ``timeout`` bounds each
    wait for an event and for a continue to be written (None: as long as the
    session lives); without an :meth:`idle` hook a wait that runs out raises
    ``TimeoutError``.

    ``discover`` (the session was created with discovery filters): at each rest
    the loop pauses before the next announced batch (``ContinueToParams``), and
    only when none is left goes on with ``advance`` blocks per continue;
    ``inject`` (base64 transactions) goes with the request that leaves each pause,
    so it runs right before the paused-at batch.
    """

    def __init__(self, session: ManagedBacktestSession, advance: int = 1, *,
                 on_event: OnEvent | None = None, timeout: float | None = None,
                 discover: bool = False, inject: tuple[str, ...] = ()) -> None:
        self.session = session
        self.default = ContinueParams(advance_count=advance)
        self.timeout = timeout
        self._on_event = on_event
        self.stepping = DiscoveryTracker() if discover else None
        self.inject = inject

    def run(self) -> Completed | None:
        """Until ``Completed`` (returned), or None once :meth:`stopped` says so."""
        while not self.stopped():
            try:
                event = self.next_event()
            except TimeoutError as quiet:
                self.idle(quiet)
                continue
            answer = self.event(event)
            params = answer if isinstance(answer, ContinueParams | ContinueToParams) else None
            if self.stepping is not None:
                self.stepping.seen(event)
            if isinstance(event, ReadyForContinue | Paused):
                self.continue_with(params or self.next_step(isinstance(event, Paused)))
            elif isinstance(event, ContinueLost) and not event.resent:
                self.lost(event, params)
            elif isinstance(event, Completed):
                return event
        return None

    def next_step(self, paused: bool) -> AnyContinue:
        """What leaves this rest by default: the next discovery, else ``advance`` blocks;
        ``inject`` goes along when leaving a pause."""
        inject = self.inject if paused else ()
        discovery = None if self.stepping is None else self.stepping.next_discovery()
        if discovery is not None:
            return discovery.continue_to(inject)
        return attrs.evolve(self.default, transactions=inject) if inject else self.default

    def continue_with(self, params: AnyContinue) -> None:
        """Send one continue: :meth:`before_continue` first (a write-ahead record)."""
        self.before_continue(params)
        self.send_continue(params)

    # --- hooks ------

    def next_event(self) -> ManagedEvent:
        return self.session.next_event(timeout=self.timeout)

    def event(self, event: ManagedEvent) -> AnyContinue | None:
        """Every event, before the loop acts on it."""
        return self._on_event(event) if self._on_event is not None else None

    def before_continue(self, params: AnyContinue) -> None:
        """Right before a continue is handed over."""

    def send_continue(self, params: AnyContinue) -> None:
        if isinstance(params, ContinueToParams):
            self.session.send_continue_to(params, timeout=self.timeout)
        else:
            self.session.send_continue(params, timeout=self.timeout)

    def lost(self, event: ContinueLost, params: AnyContinue | None) -> None:
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
