"""SubControlActor: a sub-session's control link, carried by the shared parallel link.

To its :class:`~actors.supervision.supervisor.SessionSupervisor` it is a control
link like :class:`~actors.supervision.control.ControlActor`: it reports the
sub-session's events (``ControlEvents``), Up when the shared link is Up with its
re-attach replay complete, a loss when the shared link is lost, and writes the
continues it is given. The socket is the
:class:`~actors.supervision.parallel_hub.ParallelHub`'s: this actor only talks to
the hub, so a sub-session keeps every rule of a single session (gating, the
lost-continue rule, replays dropped by seq) without a socket of its own.
"""

from __future__ import annotations

from typing import Any

import attrs
import pykka

from protocol import Attach, Success

from ..events import CONTROL, ManagedEvent
from .control import ContinueNotWritten, ContinueWritten, ControlEvents, WriteContinue, to_event
from .link_actor import ChildClosed, ChildLost, ChildUp, CloseLink, Grant
from .parallel_control import WriteFor, WrittenFor
from .parallel_hub import PortEvents, Register, SharedLost, SharedUp, Unregister


@attrs.frozen
class _Closing:
    pass


class SubControlActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, *, hub: pykka.ActorRef[Any], attach: Attach | None,
                 supervisor: pykka.ActorRef[Any], generation: int, **_: Any) -> None:
        super().__init__()
        if attach is None:  # a sub-session always exists before its supervisor starts
            raise ValueError("attach: a sub-session's control link needs its session id")
        self._hub = hub
        self._session_id = attach.session_id
        self._last_seq = attach.last_sequence
        self._supervisor = supervisor
        self._generation = generation
        self._up = False
        self._closing = False
        self._detached = False
        self._done = False

    def on_start(self) -> None:
        self._hub.tell(Register(self._session_id, self.actor_ref, self._last_seq))

    def on_stop(self) -> None:
        try:
            self._hub.tell(Unregister(self._session_id, self.actor_ref,
                                      closed=self._closing and not self._detached))
        except pykka.ActorDeadError:
            pass

    def on_receive(self, message: Any) -> Any:
        if self._done:
            return None
        if isinstance(message, PortEvents):
            self._events(message)
        elif isinstance(message, SharedUp):
            if not self._up and not self._closing:
                self._up = True
                self._report(ChildUp(CONTROL, self._generation))
        elif isinstance(message, SharedLost):
            self._end(ChildClosed(CONTROL, self._generation) if self._closing else ChildLost(
                CONTROL, self._generation, f"shared control: {message.reason}",
                terminal=message.terminal, request_written=True))
        elif isinstance(message, WriteContinue):
            self._hub.tell(WriteFor(self._session_id, message.params, self.actor_ref))
        elif isinstance(message, WrittenFor):
            if self._closing:  # the close request: its acknowledgement ends the link
                if not message.written:
                    self._end(ChildClosed(CONTROL, self._generation))
            else:
                self._report(ContinueWritten(self._generation) if message.written
                             else ContinueNotWritten(self._generation))
        elif isinstance(message, CloseLink):
            self._close(message.detach)
        elif isinstance(message, Grant):
            pass  # the shared link gives its credits back as soon as the hub has events
        return None

    def _events(self, message: PortEvents) -> None:
        items: list[tuple[int | None, ManagedEvent | None]] = []
        closed = False
        for seq, response in message.items:
            if isinstance(response, Success):
                closed = closed or self._closing  # the close's acknowledgement
                continue
            items.append((seq, to_event(response)))
        if items:
            self._report(ControlEvents(self._generation, items))
        if closed:
            self._end(ChildClosed(CONTROL, self._generation))

    def _close(self, detach: bool) -> None:
        if self._closing:
            return
        self._closing = True
        self._detached = detach
        if detach or not self._up:
            self._end(ChildClosed(CONTROL, self._generation))
            return
        self._hub.tell(WriteFor(self._session_id, None, self.actor_ref))

    def _end(self, report: Any) -> None:
        self._done = True
        self._report(report)
        self.stop()

    def _report(self, message: Any) -> None:
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            pass
