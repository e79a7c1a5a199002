"""Fault injection for the local simulator: the faults a real network produces.

Every method may be called from any thread; it is handed to the server's event
loop. A *target* picks the connections: ``"control"``, ``"transactions"``,
``"account_diffs"``, ``"subscriptions"`` (both streams) or ``"all"``; an optional
``session_id`` narrows it to one session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from .server import SimulatorServer

Target = Literal["control", "transactions", "account_diffs", "subscriptions", "all"]
FaultKind = Literal["drop", "blackhole", "malformed"]
TARGETS = ("control", "transactions", "account_diffs", "subscriptions", "all")

DEFAULT_MALFORMED_FRAME = '{"method": "slotNotification", "params": '


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")


@attrs.define
class SlotTrigger:
    """A connection fault armed for the moment a session reaches ``slot``."""

    kind: FaultKind
    target: Target
    slot: int
    session_id: str | None
    frame: str | bytes = DEFAULT_MALFORMED_FRAME


@attrs.define
class CountedFault:
    """A fault applied to the next ``count`` matching handshakes or upgrades."""

    target: Target
    count: int
    session_id: str | None
    value: float  # seconds of delay, or an HTTP status


@attrs.define
class FaultCounters:
    drop: int = 0
    blackhole: int = 0
    malformed: int = 0
    refuse: int = 0
    delay_handshake: int = 0
    http_status: int = 0
    lose_continue: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class Faults:
    """The public fault API of :class:`~protocol.simulator.LocalSimulator`."""

    def __init__(self, server: SimulatorServer) -> None:
        self._server = server

    def _call(self, fn: Callable[[], object]) -> None:
        self._server.call_soon(fn)

    def drop(self, target: Target = "control", *, at_slot: int | None = None,
             session_id: str | None = None) -> None:
        """Abrupt close (TCP reset, no close frame), now or when ``at_slot`` is reached."""
        self._connection_fault("drop", target, at_slot, session_id)

    def blackhole(self, target: Target = "control", *, at_slot: int | None = None,
                  session_id: str | None = None) -> None:
        """Keep the TCP connection open but carry nothing, both ways.

        Nothing is read and nothing is written any more, not even the server's
        own keepalive pings or its answers to the peer's pings: the transport is
        broken, the server is not told. Its keepalive finds the connection dead
        after ``keepalive_deadline`` like any silent peer (a dead owner then loses
        its session) and closes it; that close does reach the peer.
        """
        self._connection_fault("blackhole", target, at_slot, session_id)

    def malformed(self, target: Target = "control", *, frame: str | bytes | None = None,
                  at_slot: int | None = None, session_id: str | None = None) -> None:
        """Send one frame that is not a valid message (bytes go as a binary frame)."""
        self._connection_fault("malformed", target, at_slot, session_id,
                               DEFAULT_MALFORMED_FRAME if frame is None else frame)

    def refuse(self, seconds: float) -> None:
        """Stop listening for ``seconds``: new connects are refused by the OS."""
        if seconds <= 0:
            raise ValueError(f"seconds: expected > 0, got {seconds}")
        self._call(lambda: self._server.refuse(seconds))

    def delay_handshake(self, seconds: float, target: Target = "control", *, count: int = 1,
                        session_id: str | None = None) -> None:
        """Hold the next ``count`` handshake answers (created/attached/subscribe ack)."""
        check_target(target)
        fault = CountedFault(target, count, session_id, seconds)
        self._call(lambda: self._server.handshake_delays.append(fault))

    def http_status(self, status: int, target: Target = "control", *, count: int = 1) -> None:
        """Answer the next ``count`` upgrades with this HTTP status instead of 101."""
        check_target(target)
        if not 400 <= status <= 599:
            raise ValueError(f"status: expected an HTTP error status, got {status}")
        fault = CountedFault(target, count, None, status)
        self._call(lambda: self._server.http_faults.append(fault))

    def lose_next_continue(self, *, session_id: str | None = None) -> None:
        """The next ``continue`` is lost with its connection: never processed, socket reset.

        What a network does to bytes still in flight when a link dies; the
        client cannot tell it from a continue the server is still working on.
        """
        self._call(lambda: self._server.lose_continue.append(session_id))

    def _connection_fault(self, kind: FaultKind, target: Target, at_slot: int | None,
                          session_id: str | None,
                          frame: str | bytes = DEFAULT_MALFORMED_FRAME) -> None:
        check_target(target)
        trigger = SlotTrigger(kind, target, -1 if at_slot is None else at_slot, session_id,
                              frame)
        if at_slot is None:
            self._call(lambda: self._server.apply_fault(trigger))
        else:
            self._call(lambda: self._server.slot_triggers.append(trigger))
