"""Fault injection for the local simulator: the faults a real network produces.

Every method may be called from any thread; it is handed to the server's event
loop. A *target* picks the connections: ``"control"``, ``"transactions"``,
``"account_diffs"``, ``"subscriptions"`` (both streams) or ``"all"``; an optional
``session_id`` narrows it to one session.

A connection fault fires now, or is *aimed* at a moment a test can name:
``at_slot=S`` (the session executes slot S: take S from ``expected().slots[1:]``),
``at_block=N`` (the session executes its Nth block, 1-based) or ``at_continue=N``
(the server accepts the session's Nth continue, before it answers it). An aim
that can never be reached is refused when it is set, with a ``ValueError`` that
names it: a slot with no block, a slot outside the chain, a moment the named
session has already passed or will never reach. A fault that silently never
fires would let a harness pass without testing anything.
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


Moment = Literal["slot", "block", "continue"]


@attrs.define
class Trigger:
    """A connection fault, applied now (``moment`` None) or armed for the moment a
    session reaches ``number`` (a slot, its Nth block, its Nth continue)."""

    kind: FaultKind
    target: Target
    session_id: str | None
    frame: str | bytes = DEFAULT_MALFORMED_FRAME
    moment: Moment | None = None
    number: int = 0


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
    fail_session: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class Faults:
    """The public fault API of :class:`~protocol.simulator.LocalSimulator`."""

    def __init__(self, server: SimulatorServer) -> None:
        self._server = server

    def _call(self, fn: Callable[[], object]) -> None:
        self._server.call_soon(fn)

    def drop(self, target: Target = "control", *, at_slot: int | None = None,
             at_block: int | None = None, at_continue: int | None = None,
             session_id: str | None = None) -> None:
        """Abrupt close (TCP reset, no close frame), now or at the aimed moment."""
        self._connection_fault("drop", target, session_id, DEFAULT_MALFORMED_FRAME,
                               at_slot=at_slot, at_block=at_block, at_continue=at_continue)

    def blackhole(self, target: Target = "control", *, at_slot: int | None = None,
                  at_block: int | None = None, at_continue: int | None = None,
                  session_id: str | None = None) -> None:
        """Keep the TCP connection open but carry nothing, both ways.

        Nothing is read and nothing is written any more, not even the server's
        own keepalive pings or its answers to the peer's pings: the transport is
        broken, the server is not told. Its keepalive finds the connection dead
        after ``keepalive_deadline`` like any silent peer (a dead owner then loses
        its session) and closes it; that close does reach the peer.
        """
        self._connection_fault("blackhole", target, session_id, DEFAULT_MALFORMED_FRAME,
                               at_slot=at_slot, at_block=at_block, at_continue=at_continue)

    def malformed(self, target: Target = "control", *, frame: str | bytes | None = None,
                  at_slot: int | None = None, at_block: int | None = None,
                  at_continue: int | None = None, session_id: str | None = None) -> None:
        """Send one frame that is not a valid message (bytes go as a binary frame)."""
        self._connection_fault("malformed", target, session_id,
                               DEFAULT_MALFORMED_FRAME if frame is None else frame,
                               at_slot=at_slot, at_block=at_block, at_continue=at_continue)

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

    def fail_session(self, session_id: str, kind: str = "advanceSlotFailed") -> None:
        """The session's next continue fails for good: answered with the terminal error
        ``kind`` (the server could not advance it), and the session is removed. A
        sub-session of a parallel session fails alone; its siblings go on."""
        self._call(lambda: self._server.failing.__setitem__(session_id, kind))

    def _connection_fault(self, kind: FaultKind, target: Target, session_id: str | None,
                          frame: str | bytes, *, at_slot: int | None, at_block: int | None,
                          at_continue: int | None) -> None:
        check_target(target)
        given: list[tuple[Moment, int | None]] = [
            ("slot", at_slot), ("block", at_block), ("continue", at_continue)]
        aims = [(moment, number) for moment, number in given if number is not None]
        if len(aims) > 1:
            raise ValueError("at_slot, at_block, at_continue: give at most one of them, got "
                             + ", ".join(f"at_{m}={n}" for m, n in aims))
        if not aims:
            now = Trigger(kind, target, session_id, frame)
            self._call(lambda: self._server.apply_fault(now))
            return
        moment, number = aims[0]
        if type(number) is not int:
            raise ValueError(f"at_{moment}: expected an integer, got {number!r}")
        trigger = Trigger(kind, target, session_id, frame, moment, number)
        # Checked and armed in one step on the server's loop, so that the session
        # cannot pass the moment between the check and the arming.
        problem = self._server.call(lambda: self._server.arm(trigger))
        if problem is not None:
            raise ValueError(problem)
