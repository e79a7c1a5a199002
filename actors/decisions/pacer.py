"""ContinuePacer: when a continue may go, and how far the session may run ahead.

A plain class (no threads, no sockets) owned by the supervisor. It is fed what
happened (a link went up or down, the control reported a slot or an answer, a
barrier came back) and says what to do next (write this chunk, send these
barriers, deliver ``Completed``, report this gap).

**Why the session must not run ahead.** The server keeps subscription events
for the last :data:`PUBSUB_BUFFER_SLOTS` executed slots only. A subscription
link that dies (or goes silent, which looks like Up until its keepalive
deadline) resumes with ``replayFromSlot``; whatever fell out of the buffer
meanwhile is gone. So the pacer bounds the *lag* of every stream: the number of
executed slots the control has reported after the slot the stream has
*confirmed*. A stream is confirmed through executed slot ``i`` when a barrier
(a ping carrying a token, sent on the stream's connection after the control
reported slot ``i``) comes back: the server answers a ping after every frame it
wrote before it, and it writes a slot's notifications before that slot's
``slotNotification``, so the pong proves every notification up to ``i`` was
read.

**The rule.** A chunk of ``n`` blocks may be written only when every
connection is Up (the reference's gate) and ``lag + n <= max_run_ahead`` for
every stream. With ``max_run_ahead <= PUBSUB_BUFFER_SLOTS`` a stream that dies
at any moment resumes within the buffer: at most ``max_run_ahead`` slots ran
since its confirmed slot, and nothing more is written until it is back (the
default keeps a margin of 20 slots for a continue the server ran just as the
link came back). A user continue with a larger ``advance_count`` is split into
chunks; the user's transactions and account changes go with the first chunk
only, the intermediate ``readyForContinue`` answers are absorbed, and the
application sees one ``ReadyForContinue`` at the end. Barriers are sent early,
once a stream's lag passes half the budget, so a chunk rarely waits for one.
A link that cannot answer its barrier holds the next chunk until it is found
dead (keepalive deadline) and resumes.

**A continue lost in flight** is never re-sent blindly and never left hanging
(actors/DESIGN.md §3). It counts as lost on evidence: the control link re-attached (the
dead connection can deliver nothing more), the attach replay is complete (the
resume's ``success`` comes after it), and no sequenced response newer than the
write point arrived within the quiet window. Policy ``"resend"`` writes it once
more; ``"raise"`` hands it back to the application. A continue answered more
often than it was written (an answer arriving with none outstanding) is a
double advance: counted, never hidden.

**Gaps.** With ``max_run_ahead > PUBSUB_BUFFER_SLOTS`` (the user's choice: fewer
barriers, no safety) a link that stays down longer than the server needs to
run a chunk comes back to a buffer that no longer reaches its resume point.
The pacer then reports a :class:`Gap` with the executed slots that may have lost
events: those after the last slot known complete and before the oldest slot
the buffer still held when the link re-subscribed. The bound is exact when the
link re-subscribed after the chunk ended (the usual case: a link down for that
long); if the re-subscribe raced a running chunk, the range is an upper bound.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Literal

import attrs

from protocol import BacktestError, ContinueParams, ContinueToParams
from protocol.pubsub import PUBSUB_BUFFER_SLOTS

from ..events import (
    Completed,
    ContinueLost,
    Error,
    Gap,
    InvalidArgument,
    ManagedEvent,
    ManagedSessionError,
    Paused,
    ReadyForContinue,
    Slot,
)
from .cursor import PendingContinue

DEFAULT_MAX_RUN_AHEAD = PUBSUB_BUFFER_SLOTS - 20  # 20 slots of margin
SESSION_ENDING_ERRORS = frozenset({
    "advanceSlotFailed", "finalizeSlotFailed", "noMoreBlocks", "sessionNotFound",
    "sessionOwnerMismatch", "bundleNotFound", "noProducedBlocksInRange"})

ContinueState = Literal["idle", "pending", "handed", "outstanding"]
AnyContinue = ContinueParams | ContinueToParams
LostContinuePolicy = Literal["resend", "raise"]


@attrs.define
class _StreamState:
    confirmed: int  # index into the executed slots: everything before it was read
    barrier: tuple[bytes, int] | None = None  # (token, executed count when sent)
    up: bool = False
    # Set when the link re-subscribed: (executed count then, a continue was running).
    resubscribed: tuple[int, bool] | None = None
    at_risk_from: int = -1  # slot: events from it on may be missing after a re-subscribe
    reported_through: int = -1  # the last slot a Gap already named: never named twice
    closing: bool = False  # unsubscribing: confirm every executed slot, then close


class ContinuePacer:
    """The continue state machine of one session; see the module docstring."""

    def __init__(self, *, max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
                 buffer_slots: int = PUBSUB_BUFFER_SLOTS,
                 on_lost_continue: LostContinuePolicy = "resend") -> None:
        self.max_run_ahead = max_run_ahead
        self.buffer_slots = buffer_slots
        self.on_lost_continue = on_lost_continue
        # Where the chunk in flight was written: control generation, last seqId then,
        # whether it was the user continue's first chunk (it carries the transactions).
        self._written_at: tuple[int, int | None, bool] = (0, None, False)
        self._resent_chunk = 0  # blocks given back for a resend not yet written
        self.state: ContinueState = "idle"
        self.params: AnyContinue | None = None  # the user's continue being carried out
        self.reply: Any = None
        self._remaining = 0  # blocks of the user's continue not yet written
        self._first_chunk = True
        self._chunk = 0  # blocks of the chunk in flight
        self._control_up = False
        self._streams: dict[str, _StreamState] = {}
        # Executed slots the control reported, oldest first; _base is the index of [0].
        self._slots: deque[int] = deque()
        self._base = 0
        self._written_any = False
        self._completed = False
        self._completed_released = False
        self.completed_event: Completed | None = None
        self._tokens = itertools.count(1)
        self.stats = {"chunks_written": 0, "barriers_sent": 0, "chunk_holds": 0, "gaps": 0,
                      "gap_slots": 0, "lost_continues": 0, "continues_resent": 0,
                      "double_advances": 0, "continues_written": 0}
        self._holding = False
        # Where the session rests: the newest slot the control reported (the anchor
        # first), and the (slot, batch) of a continue-to pause (None: between blocks).
        self.last_slot = -1
        self.paused_at: tuple[int, int | None] | None = None

    # --- what happened ------

    @property
    def executed(self) -> int:
        """Executed slots reported by the control so far."""
        return self._base + len(self._slots)

    def link_up(self, name: str) -> None:
        if name in self._streams:
            self._streams[name].up = True
        else:
            self._control_up = True

    def link_down(self, name: str) -> None:
        stream = self._streams.get(name)
        if stream is None:
            self._control_up = False
            self.not_written()  # handed but not confirmed written: it was not
            return
        stream.up = False
        stream.barrier = None  # its pong will never come

    def add_stream(self, name: str, resumed: bool = False) -> None:
        """A new subscription: it owes nothing for the slots executed before it.

        ``resumed`` (attached from a cursor): it owes everything after the cursor,
        including slots the attach replay reported, so nothing counts as confirmed
        (a confirmed slot would move its ``replayFromSlot`` past what it owes)."""
        self._streams[name] = _StreamState(confirmed=self._base if resumed else self.executed)

    def remove_stream(self, name: str) -> None:
        self._streams.pop(name, None)

    def unsubscribe(self, name: str) -> None:
        """Close the stream of ``name`` cleanly: every item of the blocks executed until
        it is confirmed is still delivered, then :meth:`streams_closed` names it.

        Until then no chunk is written (each would add blocks to confirm), and a
        barrier is sent at once: the unsubscribe costs one ping/pong round trip.
        """
        self._streams[name].closing = True

    def streams_closed(self) -> list[str]:
        """Streams being unsubscribed whose every executed slot is confirmed; removed
        here, for the supervisor to close their links."""
        executed = self.executed
        done = [name for name, s in self._streams.items()
                if s.closing and s.barrier is None and s.confirmed >= executed]
        for name in done:
            del self._streams[name]
        if done:
            self._trim()
        return done

    def closing(self, name: str) -> bool:
        stream = self._streams.get(name)
        return stream is not None and stream.closing

    def absorb(self, event: ManagedEvent) -> ManagedEvent | None:
        """A control event passes through the pacer: it returns what the application
        should see now (``None``: the end of a chunk, or ``Completed``, held in
        :attr:`completed_event` until every stream confirmed the last slot)."""
        if isinstance(event, Slot):
            self.on_slot(event.slot)
        elif isinstance(event, ReadyForContinue):
            self.paused_at = None
            return event if self.on_ready() else None
        elif isinstance(event, Paused):
            self.paused_at = (event.slot, event.batch_index)
            return event if self.on_ready() else None
        elif isinstance(event, Completed):
            self.on_completed()
            self.completed_event = event
            return None
        elif isinstance(event, Error):
            self.on_error()
        return event

    @staticmethod
    def ends_session(error: BacktestError) -> bool:
        """Whether an ``error`` frame means the session cannot go on.

        Decision (the reference classifies errors for handshakes only): an
        error answering a continue ends that continue (:meth:`on_error`). Those
        that say the *session* is broken or gone also fail it, after the
        ``Error`` event is delivered; ``invalid*`` ones blame the request (a bad
        transaction, a continue while not ready) and the session goes on.
        """
        return error.kind in SESSION_ENDING_ERRORS

    def refusal(self, session_over: bool) -> ManagedSessionError | None:
        """Why a user continue cannot be taken now, if it cannot."""
        if session_over or self._completed:
            return ManagedSessionError("closed", "session is over")
        if self.state != "idle":
            return ManagedSessionError("continue_outstanding",
                                       "the previous continue has not been answered yet")
        return None

    def check_target(self, params: ContinueToParams, end_slot: int) -> InvalidArgument | None:
        """Why a continue-to cannot go from where the session rests (None: it can).

        Checked before anything is sent, against what the application has been
        told: between blocks, the target must be in a later slot than the last
        executed one; at a pause, after the paused-at batch. A batch index past
        the slot's batches only the server knows: it answers with an error and
        the session does not move.
        """
        if params.slot > end_slot:
            return InvalidArgument(f"slot: {params.slot} is past the session's end slot "
                                   f"{end_slot}")
        if self.paused_at is not None and not params.after(*self.paused_at):
            slot, batch = self.paused_at
            return InvalidArgument(
                f"slot: slot {params.slot} batch_index {params.batch_index} is not ahead of "
                f"the session, paused at slot {slot} batch_index {batch}")
        if self.paused_at is None and params.slot <= self.last_slot:
            return InvalidArgument(
                f"slot: {params.slot} is not ahead of the session, which executed slot "
                f"{self.last_slot}")
        return None

    def on_slot(self, slot: int) -> None:
        """The control reported ``slot``; the anchor slot before any continue is not a block."""
        self.last_slot = max(self.last_slot, slot)
        if not self._written_any:
            return
        self._slots.append(slot)
        self._trim()

    def on_ready(self) -> bool:
        """``readyForContinue``: True when the application should see it."""
        if self.state != "outstanding" and not self._late_answer():
            self._unexpected_answer()
            return True
        self._chunk = 0
        if self._remaining > 0:
            self.state = "pending"  # the next chunk of the same user continue
            return False
        self._finish()
        return True

    def on_completed(self) -> None:
        if self.state != "outstanding" and not self._late_answer():
            self._unexpected_answer()
        self._completed = True
        self._chunk = 0
        if self.state in ("outstanding", "handed", "pending"):
            self._finish()

    def on_error(self) -> bool:
        """An ``error`` answer; True when it answered the continue in flight.

        The server answers a continue with ``readyForContinue``, ``completed`` or
        an error, never two of them: an error while a chunk is out ends that
        user continue (the rest is not written) and the application decides.
        """
        if self.state != "outstanding":
            return False
        self._chunk = 0
        self._remaining = 0
        self._finish()
        return True

    def barrier_reached(self, name: str, token: bytes) -> bool:
        stream = self._streams.get(name)
        if stream is None or stream.barrier is None or stream.barrier[0] != token:
            return False
        stream.confirmed = max(stream.confirmed, stream.barrier[1])
        stream.barrier = None
        self._trim()
        return True

    # --- the user's continue ------

    def submit(self, params: AnyContinue, reply: Any) -> None:
        """Take a user continue; the caller checked that the state is idle.

        A continue-to is one chunk (``_remaining`` 1): it cannot be split, since
        only the server knows how many blocks lie before its target.
        """
        self.state = "pending"
        self.params, self.reply = params, reply
        self._remaining = params.advance_count if isinstance(params, ContinueParams) else 1
        self._first_chunk = True

    def handed(self) -> None:
        self.state = "handed"

    def not_written(self) -> None:
        """The chunk taken by ``next_chunk`` was not written: the control link died before
        it was handed over (the tell failed) or before it reached the wire."""
        if self.state == "handed" or (self.state == "pending" and self._chunk):
            self.state = "pending"
            self._remaining += self._chunk
            self._chunk = 0

    def written(self, generation: int, last_seq: int | None) -> bool:
        """The chunk reached the wire on control ``generation`` when the last seqId was
        ``last_seq``; True (and the application's reply answered) when it was the
        user continue's first chunk (not a resend)."""
        if self.state != "handed":
            return False
        self.state = "outstanding"
        self._written_any = True
        self.stats["chunks_written"] += 1
        first, self._first_chunk = self._first_chunk, False
        self._written_at = (generation, last_seq, first)
        resent, self._resent_chunk = self._resent_chunk, 0
        if not first or resent:
            return False
        self.stats["continues_written"] += 1
        if self.reply is not None:
            self.reply.set(None)  # the application's wait ends: answered once, even
            self.reply = None     # if the chunk is written again later
        return True

    def refused_on_the_wire(self, generation: int) -> AnyContinue | None:
        """The control link of ``generation`` was closed by the server with 1009 (a frame
        too big) after the chunk in flight was written on it: the server refused that
        frame, so it never ran, and written again it would only be refused again. The
        continue ends here; its params are returned for the application's error."""
        if (self.state != "outstanding" or self._written_at[0] != generation
                or self.params is None):
            return None
        params = self.params
        self._finish()
        return params

    def control_resumed(self, generation: int) -> bool:
        """The control link is Up on ``generation`` with its attach replay complete.
        True when a chunk written on an older connection is still unanswered: the
        quiet window starts now."""
        return self.state == "outstanding" and self._written_at[0] < generation

    def quiet_window_over(self, generation: int, last_seq: int | None
                          ) -> ContinueLost | None:
        """The quiet window after ``control_resumed`` ended with ``last_seq`` the newest
        seqId: the continue is lost when nothing newer than its write point came."""
        written_on, written_seq, first = self._written_at
        if (self.state != "outstanding" or written_on >= generation
                or last_seq != written_seq or self.params is None):
            return None
        self.stats["lost_continues"] += 1
        lost: AnyContinue
        if isinstance(self.params, ContinueToParams):
            lost = self.params if first else attrs.evolve(self.params, transactions=())
        else:
            lost = ContinueParams(advance_count=self._remaining + self._chunk)
            if first:
                lost = attrs.evolve(self.params, advance_count=lost.advance_count)
        if self.on_lost_continue == "resend":
            self.stats["continues_resent"] += 1
            self.state = "pending"
            self._remaining += self._chunk
            self._resent_chunk, self._chunk = self._chunk, 0
            self._first_chunk = first
            return ContinueLost(lost, resent=True)
        self._finish()
        return ContinueLost(lost, resent=False)

    def resume(self, pending: PendingContinue | None, last_slot: int = -1,
               paused_at: tuple[int, int | None] | None = None, seen_any: bool = True
               ) -> None:
        """Attach from a cursor: the session has run; a continue the application sent
        and saw no answer to counts as written at ``write_seq`` on an older connection,
        so the replay answers it or :meth:`quiet_window_over` judges it lost. The
        session rests where the cursor says (``last_slot``, ``paused_at``)."""
        # A cursor taken before any control event (a parallel sub-session attached as
        # it is created) has seen no answer: the first readyForContinue is the start's.
        self._written_any = seen_any or pending is not None
        self.last_slot, self.paused_at = last_slot, paused_at
        if pending is None:
            return
        self.state, self.params, self.reply = "outstanding", pending.params, None
        self._remaining = 0
        self._chunk = (pending.params.advance_count
                       if isinstance(pending.params, ContinueParams) else 1)
        self._first_chunk = False
        self._written_at = (0, pending.write_seq, True)

    def pending_continue(self, last_seq: int | None) -> PendingContinue | None:
        """The continue under way as a cursor states it (listener sessions)."""
        if self.state == "idle" or self.params is None:
            return None
        written = self._written_at[1] if self.state == "outstanding" else last_seq
        return PendingContinue(self.params, written)

    def abandon(self) -> None:
        """The session failed or closed: drop the continue in flight."""
        self.state, self.params, self.reply = "idle", None, None
        self._remaining = self._chunk = 0

    # --- what to do next ------

    def next_chunk(self) -> AnyContinue | None:
        """The chunk to write now, or None (gated, or nothing pending)."""
        if self.state != "pending" or self.params is None:
            return None
        if not self._control_up or not all(s.up and not s.closing
                                           for s in self._streams.values()):
            return None
        if isinstance(self.params, ContinueToParams):
            return self._continue_to_chunk(self.params)
        n = self._remaining
        if self._streams:
            n = min(n, self.max_run_ahead - self._lag())
        if n <= 0:
            if not self._holding:
                self._holding = True
                self.stats["chunk_holds"] += 1
            return None  # wait for the barriers (barriers_due asks for them)
        self._holding = False
        self._remaining -= n
        self._chunk = n
        if self._first_chunk:
            return attrs.evolve(self.params, advance_count=n)
        return ContinueParams(advance_count=n)

    def _continue_to_chunk(self, params: ContinueToParams) -> ContinueToParams | None:
        """The continue-to, once the streams can take what it may run.

        It runs at most ``slot - rest`` blocks (``rest``: the paused-at or last
        executed slot), so it waits until the streams' lag leaves room for that,
        as a chunk of that size would; one spanning more than ``max_run_ahead``
        goes when every stream confirmed everything (lag 0). Such a one is the one
        case where the run-ahead bound does not hold: a link lost during it can
        miss items, reported as a ``Gap``, never silently.
        """
        if self._streams:
            rest = self.paused_at[0] if self.paused_at is not None else self.last_slot
            span = min(max(params.slot - rest, 1), self.max_run_ahead)
            if self._lag() + span > self.max_run_ahead:
                if not self._holding:
                    self._holding = True
                    self.stats["chunk_holds"] += 1
                return None
        self._holding = False
        self._remaining, self._chunk = 0, 1
        return params if self._first_chunk else attrs.evolve(params, transactions=())

    def barriers_due(self) -> list[tuple[str, bytes]]:
        """Barriers to send now: early at half the budget, and whatever holds a chunk or
        ``Completed``."""
        due: list[tuple[str, bytes]] = []
        executed = self.executed
        for name, stream in self._streams.items():
            if not stream.up or stream.barrier is not None or stream.confirmed >= executed:
                continue
            lag = executed - stream.confirmed
            if (lag * 2 >= self.max_run_ahead or self._holding or self._completed
                    or stream.closing):
                token = f"gate-{next(self._tokens)}".encode()
                stream.barrier = (token, executed)
                due.append((name, token))
        self.stats["barriers_sent"] += len(due)
        return due

    @property
    def completed_done(self) -> bool:
        """``Completed`` was released to the application."""
        return self._completed_released

    def completed_due(self) -> bool:
        """``Completed`` may go: every stream confirmed through the last executed slot."""
        if not self._completed or self._completed_released:
            return False
        executed = self.executed
        if any(s.confirmed < executed for s in self._streams.values()):
            return False
        self._completed_released = True
        return True

    # --- gaps ------

    def resubscribing(self, name: str, delivered_through: int) -> None:
        """The link of ``name`` re-subscribes with replay.

        ``delivered_through`` is the newest slot with an item delivered: that
        slot may be partial, every older one is complete (one connection
        delivers in slot order, a resume's replay is sorted). A confirmed slot
        is complete, barrier-proven.
        """
        stream = self._streams[name]
        running = self.state in ("handed", "outstanding")
        stream.resubscribed = (self.executed, running)
        # A slot a Gap already reported is not at risk again: the link may drop once
        # more before any replayed item reached the application (delivered_through
        # has not moved), and the same slots must not be reported twice.
        stream.at_risk_from = max(delivered_through, self._confirmed_slot(stream) + 1,
                                  stream.reported_through + 1)

    def gap_after_resume(self, name: str, addresses: tuple[str, ...]) -> Gap | None:
        """Call when the link is Up again (or a running continue was answered)."""
        stream = self._streams.get(name)
        if stream is None or stream.resubscribed is None:
            return None
        head, running = stream.resubscribed
        if running:
            if self.state in ("handed", "outstanding"):
                return None  # the server head at re-subscribe is not known yet
            head = self.executed  # an upper bound: the chunk ended after the subscribe
        stream.resubscribed = None
        oldest_kept = head - self.buffer_slots  # index of the buffer's oldest slot
        first = self._first_index_after(stream.at_risk_from)
        if first >= oldest_kept:
            return None
        first = max(first, self._base)
        slots = [self._slots[i - self._base] for i in range(first, oldest_kept)]
        if not slots:
            return None
        self.stats["gaps"] += 1
        self.stats["gap_slots"] += len(slots)
        stream.reported_through = slots[-1]
        return Gap(name, addresses, slots[0], slots[-1], len(slots))

    def replay_from(self, name: str, last_delivered: int | None, start_slot: int) -> int:
        """Where a re-subscribe resumes: the address's last delivered slot (inclusive:
        it may be partial) or past the stream's barrier-confirmed slot, whichever is
        later; with neither, ``start_slot`` (the whole server buffer)."""
        confirmed = self._confirmed_slot(self._streams[name])
        candidates = [s for s in (last_delivered, confirmed + 1 if confirmed >= 0 else None)
                      if s is not None]
        return max(candidates) if candidates else start_slot

    # --- internals ------

    def _late_answer(self) -> bool:
        """The answer to a continue judged lost came before its resend was written:
        it was not lost after all; the resend is called off."""
        if self.state != "pending" or not self._resent_chunk:
            return False
        self._remaining -= self._resent_chunk
        self._chunk, self._resent_chunk = self._resent_chunk, 0
        self.state = "outstanding"
        self.stats["continues_resent"] -= 1
        return True

    def _unexpected_answer(self) -> None:
        """An answer with no chunk outstanding: after the first (create) one, a continue
        was answered twice: the session advanced twice."""
        if self._written_any:
            self.stats["double_advances"] += 1

    def _finish(self) -> None:
        self.state, self.params, self.reply = "idle", None, None
        self._remaining = 0
        self._holding = False

    def _lag(self) -> int:
        executed = self.executed
        return max((executed - s.confirmed for s in self._streams.values()), default=0)

    def _confirmed_slot(self, stream: _StreamState) -> int:
        i = stream.confirmed - 1
        if i < self._base or i - self._base >= len(self._slots):
            return -1
        return self._slots[i - self._base]

    def _first_index_after(self, slot: int) -> int:
        """Index of the first executed slot at or after ``slot``."""
        for offset, executed_slot in enumerate(self._slots):
            if executed_slot >= slot:
                return self._base + offset
        return self.executed

    def _trim(self) -> None:
        """Keep what a gap report or a confirmed slot can still ask for."""
        keep_from = min((s.confirmed for s in self._streams.values()),
                        default=self.executed) - 1
        while self._slots and self._base < keep_from:
            self._slots.popleft()
            self._base += 1
