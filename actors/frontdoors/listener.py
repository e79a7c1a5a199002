"""SessionListener: a base class for an application actor that drives a session.

Pass an instance's ref as ``listener=`` to ``ManagedBacktestSession.start``.
The supervisor tells it :class:`~actors.requests.ListenerAttached` first, so
:attr:`SessionListener.supervisor` is set before the first event arrives and
:meth:`SessionListener.send_continue` works from the very first
``ReadyForContinue``: no ref to hand over, no event to hold back.
"""

from __future__ import annotations

from typing import Any

import pykka

from protocol import ContinueParams, ContinueToParams

from ..events import ManagedEvent, ManagedSessionError, SessionFailed
from ..requests import ContinueRefused, ListenerAttached, SendContinue
from ..runtime.inbox import SimpleInboxActor


class SessionListener(SimpleInboxActor):
    """Override :meth:`on_event` (and, if you like, :meth:`on_session_failed`).

    Every event reaches :meth:`on_event` once, in order, on this actor's
    thread; like any ``on_receive`` it must not block (a slow handler slows
    the session by flow control, never loses events). :meth:`send_continue`
    tells the supervisor; a refusal comes back as :meth:`on_continue_refused`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.supervisor: pykka.ActorRef[Any] | None = None
        self.failure: ManagedSessionError | None = None  # set when the session failed

    def on_receive(self, message: Any) -> Any:
        """Dispatch to the ``on_*`` hooks below; override those, not this."""
        if isinstance(message, ListenerAttached):
            self.supervisor = message.supervisor
        elif isinstance(message, SessionFailed):
            self.on_session_failed(message.error)
        elif isinstance(message, ContinueRefused):
            self.on_continue_refused(message)
        else:
            self.on_event(message)
        return None

    def on_event(self, event: ManagedEvent) -> None:
        """One session event (``ReadyForContinue``, ``Slot``, ``Transaction``, ...,
        ``Completed`` last). The default does nothing."""

    def on_session_failed(self, error: ManagedSessionError) -> None:
        """The session failed; no event follows. The default keeps it in
        :attr:`failure` (the supervisor has logged it, with the session id)."""
        self.failure = error

    def on_continue_refused(self, refused: ContinueRefused) -> None:
        """A continue from :meth:`send_continue` was refused (one was outstanding, or
        the session was over). The default does nothing (the supervisor logged it)."""

    def send_continue(self, params: ContinueParams | None = None) -> None:
        """Hand the next continue to the session (default ``ContinueParams()``: one
        block). Call it on ``ReadyForContinue``; it is written once every connection
        is Up."""
        if self.supervisor is None:
            raise ManagedSessionError("closed", "this listener is not attached to a session")
        self.supervisor.tell(SendContinue(ContinueParams() if params is None else params))

    def send_continue_to(self, params: ContinueToParams) -> None:
        """Hand a continue-to to the session: call it on ``ReadyForContinue`` or
        ``Paused``, with a ``DiscoveryBatch``'s ``continue_to()``. A target behind the
        session or past its range is refused (:meth:`on_continue_refused`, with an
        ``InvalidArgument``)."""
        if self.supervisor is None:
            raise ManagedSessionError("closed", "this listener is not attached to a session")
        self.supervisor.tell(SendContinue(params))
