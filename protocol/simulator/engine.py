"""Session state of the local simulator, free of I/O.

The server feeds requests in and gets back what to send; it owns the sockets.
The rules a real server must get right live here, where a unit test can reach
them without a socket:

* **Replay.** A session keeps its last :data:`REPLAY_LOG_LIMIT` sequenced
  responses (``log``) so that an attach can replay what a dropped client
  missed, and the notifications of the last :data:`PUBSUB_BUFFER_SLOTS`
  executed slots (``buffer``) so that a subscription can resume with
  ``replayFromSlot``. Both are bounded: memory per session does not grow with
  the length of the run or with what a client sends.
* **Ownership.** One connection owns a session (:meth:`Session.attach`); only
  its commands act on it (:meth:`Session.authorize`). A connection found dead
  (:class:`PeerLiveness`) or closed owns nothing: its session is free for the
  next attach, and a command still arriving on it is refused, never executed.
* **Liveness.** :class:`PeerLiveness` is one connection's keepalive clock: the
  server stamps inbound traffic, asks what is due, and does it (ping, close).
  Nothing here knows about injected faults: a fault only breaks a transport,
  and these rules see what any server would see, silence.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, Protocol

import attrs

from ..codec import encode_action_result, encode_notification_result, encode_response
from ..messages import (
    BacktestError,
    Completed,
    ContinueParams,
    ContinueToParams,
    CreateSession,
    DiscoveryBatch,
    DiscoveryFilter,
    EncodedBinary,
    Error,
    Paused,
    ReadyForContinue,
    Response,
    ScheduledAction,
    SessionCreated,
    SessionEvent,
    SlotNotification,
    Status,
)
from ..pubsub import (
    ACTION_NOTIFICATION,
    NOTIFICATION_METHOD,
    PUBSUB_BUFFER_SLOTS,
    AccountDiffNotification,
    ActionResultNotification,
    TransactionNotification,
)
from .chain import Chain, Tx, injected_signature, user_transaction_mentions

STARTUP_STAGES = ("preparingBundle", "bundleReady", "startingRuntime")
CONTINUE_STAGES = (
    "decodedTransactions",
    "appliedAccountModifications",
    "readyToExecuteUserTransactions",
    "executedUserTransactions",
    "executingBlockTransactions",
)
FINAL_STAGE = "executedBlockTransactions"

# The sequenced responses a session keeps for an attach to replay. A continue of
# k slots produces k + 7 responses (five stages, k slot notifications, the final
# stage, then ready or completed), so 2048 responses reach back at least 256
# executed slots whatever the advance: further than the PubSub buffer
# (PUBSUB_BUFFER_SLOTS), which is what bounds how far a client may run ahead of
# what it has confirmed anyway. About 150 bytes each: at most ~300 KB a session.
REPLAY_LOG_LIMIT = 2048
# Injected transactions a session remembers (SessionStats.injected_transactions).
INJECTED_KEPT = 64

Verdict = Literal["ping", "dead"]


@attrs.define(eq=False)
class PeerLiveness:
    """One connection's keepalive clock, free of I/O.

    The rule is the client's (protocol/WIRE.md, Keepalive): a connection from which nothing at
    all has arrived for ``deadline`` seconds is dead, whatever the reason: a
    host that vanished, a NAT that forgot the mapping, a blackhole, or a peer
    that stopped reading and so never answers a ping. Any inbound byte counts
    (a pong, the peer's own ping, a request), and so does the peer's TCP
    acknowledging data while the server waits for it to drain (the server reads
    nothing from it meanwhile). So a peer that keeps talking is alive even if it
    is slow to read; the server's flow control deals with that one (see
    ``protocol.simulator.server``). A connection idle for
    ``interval`` is pinged, so a healthy peer always has something to answer.
    Once dead (or closed) it stays dead: it can never own a session again.
    """

    interval: float
    deadline: float
    last_inbound: float
    last_ping: float = -math.inf
    dead: bool = False

    def inbound(self, at: float) -> None:
        """The peer sent something at ``at`` (clock of the caller's choosing)."""
        if at > self.last_inbound:
            self.last_inbound = at

    def check(self, now: float) -> Verdict | None:
        """What is due now: ``"dead"`` once (then nothing), ``"ping"``, or nothing."""
        if self.dead:
            return None
        if now - self.last_inbound > self.deadline:
            self.dead = True
            return "dead"
        if now - max(self.last_inbound, self.last_ping) >= self.interval:
            self.last_ping = now
            return "ping"
        return None

    def close(self) -> None:
        """The connection is gone: it owns nothing from now on."""
        self.dead = True


class Conn(Protocol):
    """What the ownership rules need to know about a connection."""

    @property
    def dead(self) -> bool: ...


class ExecutedSlot:
    """A block that was executed (or is being executed, batch by batch), kept for live
    delivery and the replay buffer.

    ``entries``: what ran in the slot so far, in order: the block's transactions
    (with their index in the block) and transactions injected at a pause (None);
    a notification's ``index`` is the entry's position, the order of execution.
    A paused session executes part of a block; the rest is appended here, so the
    replay buffer holds one entry per slot whatever the pauses.

    A notification's ``result`` is encoded on first use and then reused for every
    subscriber and every replay, so the cost is paid only for what is sent.
    """

    __slots__ = ("slot", "entries", "actions", "_tx_json", "_diff_json", "_first_write")

    def __init__(self, slot: int, txs: tuple[Tx, ...] = ()) -> None:
        self.slot = slot
        self.entries: list[tuple[Tx, int | None]] = []
        self.actions: list[str] = []  # results of scheduled actions run after the block
        self._tx_json: dict[int, str] = {}
        self._diff_json: dict[tuple[int, int], str] = {}
        # Position of each entry's first account write in the slot.
        self._first_write = [0]
        self.extend(enumerate(txs))

    @property
    def txs(self) -> list[Tx]:
        return [tx for tx, _ in self.entries]

    def extend(self, entries: Iterable[tuple[int | None, Tx]]) -> int:
        """Append what ran next; returns where it starts (for :meth:`notifications`)."""
        start = len(self.entries)
        for index, tx in entries:
            self.entries.append((tx, index))
            self._first_write.append(self._first_write[-1] + len(tx.diffs))
        return start

    def notifications(self, subs: Mapping[tuple[str, str], list[int]], start: int = 0,
                      actions_from: int = 0) -> Iterator[tuple[str, str, int]]:
        """``(method, result_json, subscription)`` for each match from entry ``start``
        on, in chain order, then the action results from ``actions_from`` on."""
        tx_method = NOTIFICATION_METHOD["transactions"]
        diff_method = NOTIFICATION_METHOD["account_diffs"]
        for i in range(start, len(self.entries)):
            tx = self.entries[i][0]
            for address in tx.mentions:
                for sub_id in subs.get(("transactions", address), ()):
                    yield tx_method, self._tx_result(i), sub_id
            for j, diff in enumerate(tx.diffs):
                for sub_id in subs.get(("account_diffs", diff.account), ()):
                    yield diff_method, self._diff_result(i, j), sub_id
        for result in self.actions[actions_from:]:
            for sub_id in subs.get(ACTIONS_KEY, ()):
                yield ACTION_NOTIFICATION, result, sub_id

    def _tx_result(self, i: int) -> str:
        cached = self._tx_json.get(i)
        if cached is None:
            # The index is the position in the slot as executed: the block's own order,
            # shifted by transactions injected at a pause (which a client's resume sorts
            # by, so an injected one must have its place too).
            tx = self.entries[i][0]
            cached = self._tx_json[i] = encode_notification_result(TransactionNotification(
                0, self.slot, tx.signature,
                {"signatures": [tx.signature], "message": {"accountKeys": list(tx.mentions)}},
                {"err": None, "fee": 5000}, index=i,
            ))
        return cached

    def _diff_result(self, i: int, j: int) -> str:
        cached = self._diff_json.get((i, j))
        if cached is None:
            tx = self.entries[i][0]
            diff = tx.diffs[j]
            cached = self._diff_json[(i, j)] = encode_notification_result(
                AccountDiffNotification(0, self.slot, diff.account, tx.signature,
                                        {"lamports": diff.pre}, {"lamports": diff.post},
                                        write_index=self._first_write[i] + j))
        return cached


# The subscription key of the action stream (it has no filter).
ACTIONS_KEY = ("actions", "")


@attrs.frozen
class SlotStep:
    """Part of a block ran: push the notifications of ``executed``'s entries from
    ``start`` on (and its action results from ``actions_from``); when ``complete``, the
    block is done: send its slot notification."""

    executed: ExecutedSlot
    start: int = 0
    complete: bool = True
    actions_from: int = 0


Step = Response | SlotStep


@attrs.define(eq=False)
class Session:
    """One backtest session; ``sequenced`` when ``disconnectTimeoutSecs > 0``."""

    id: str
    api_key: str
    create: CreateSession
    chain: Chain
    pending_slots: deque[int]
    ready: bool = False
    completed: bool = False
    next_seq: int = 1
    log: deque[tuple[int, str]] = attrs.field(factory=lambda: deque(maxlen=REPLAY_LOG_LIMIT))
    buffer: deque[ExecutedSlot] = attrs.field(
        factory=lambda: deque(maxlen=PUBSUB_BUFFER_SLOTS))
    continues_received: int = 0
    blocks_executed: int = 0
    user_transactions: int = 0
    # The last injected transactions (base64, as received), for tests and examples.
    injected: deque[str] = attrs.field(factory=lambda: deque(maxlen=INJECTED_KEPT))
    transactions_executed: int = 0
    owner: Conn | None = None
    commands_refused: int = 0
    # Precise stepping: batches of pending_slots[0] already run, that slot's entry
    # in the buffer, where a continueTo paused, the last batch a discoveryBatch named.
    position_batch: int = 0
    open_slot: ExecutedSlot | None = None
    paused_at: tuple[int, int] | None = None
    announced: tuple[int, int] = (-1, -1)
    scan_exhausted: bool = False
    discoveries_sent: int = 0
    pauses: int = 0
    # A sub-session of a parallel create: its responses go out as sessionEventV2.
    multiplexed: bool = False
    last_executed: int = -1  # the newest whole block (the start slot before any)
    # Scheduled actions not run yet, by (slot, place in CreateSession.actions).
    actions_due: deque[tuple[int, ScheduledAction]] = attrs.field(factory=deque)

    @classmethod
    def open(cls, create: CreateSession, api_key: str, chain: Chain
             ) -> tuple[Session | None, BacktestError | None]:
        first, last = chain.available_range()
        if create.start_slot < first or create.end_slot > last:
            return None, BacktestError("bundleNotFound", {
                "start_slot": create.start_slot, "end_slot": create.end_slot})
        if not chain.produced_in(create.start_slot, create.end_slot):
            return None, BacktestError("noProducedBlocksInRange", {
                "start_slot": create.start_slot, "end_slot": create.end_slot})
        session = cls(f"backtest_{uuid.uuid4()}", api_key, create, chain,
                      deque(chain.produced_in(create.start_slot + 1, create.end_slot)))
        session.last_executed = create.start_slot
        session.actions_due.extend(sorted(enumerate(create.actions),
                                          key=lambda pair: (pair[1].slot, pair[0])))
        return session, None

    @property
    def sequenced(self) -> bool:
        return self.create.disconnect_timeout_secs > 0

    def record(self, msg: Response) -> str:
        """Encode a session response, giving it the next ``seqId`` when sequenced (a
        sub-session of a parallel create: wrapped in ``sessionEventV2``, numbered
        in its own sequence)."""
        if self.multiplexed:
            seq = self.next_seq if self.sequenced else None
            frame = encode_response(SessionEvent(self.id, seq, msg))
            if seq is not None:
                self.log.append((seq, frame))
                self.next_seq += 1
            return frame
        if not self.sequenced:
            return encode_response(msg)
        frame = encode_response(msg, self.next_seq)
        self.log.append((self.next_seq, frame))
        self.next_seq += 1
        return frame

    def replay_after(self, last_sequence: int | None) -> list[str]:
        """The sequenced responses after ``last_sequence``, oldest first.

        Only the last :data:`REPLAY_LOG_LIMIT` are kept. A ``last_sequence``
        older than that window replays the whole window, without an error, as a
        ring buffer does; the client sees the gap in the ``seqId`` numbers.
        """
        after = -1 if last_sequence is None else last_sequence
        return [frame for seq, frame in self.log if seq > after]

    # --- ownership ------------------------------------------------------------------

    @property
    def owner_alive(self) -> bool:
        return self.owner is not None and not self.owner.dead

    def attach_refusal(self, conn: Conn) -> BacktestError | None:
        """Why ``conn`` may not take the session now (None: it may).

        A live owner keeps its session: another connection gets
        ``sessionOwnershipBusy`` (retryable; the client backs off), however sure
        its client is that the old connection is gone; only the server's own
        keepalive decides that. A dead owner owns nothing, so its session goes
        to the first attach. A dead connection gets nothing.
        """
        if conn.dead:
            return BacktestError("sessionOwnershipBusy",
                                 {"reason": "this connection was found dead"})
        if self.owner is not None and self.owner is not conn and not self.owner.dead:
            return BacktestError("sessionOwnershipBusy",
                                 {"reason": "another connection owns the session"})
        return None

    def attach(self, conn: Conn) -> BacktestError | None:
        """Give the session to ``conn``, or say why not (and change nothing)."""
        refusal = self.attach_refusal(conn)
        if refusal is None:
            self.owner = conn
        return refusal

    def release(self, conn: Conn) -> bool:
        """``conn`` closed, was found dead or moved on; True if it owned the session."""
        if self.owner is conn:
            self.owner = None
            return True
        return False

    def authorize(self, conn: Conn) -> BacktestError | None:
        """Fencing: a command acts on the session only when it comes from its live owner.

        A connection that lost ownership (found dead, then another attached; or
        orphaned) may still deliver a frame it sent long ago: a continue that sat
        in a buffer, a close from a stale client. Executing it would advance or
        end a session that someone else now drives, so it is refused (and
        counted), never executed. The refusal answers that connection only: it
        is not a session event, so it is not sequenced and not replayed.
        """
        if self.owner is conn and not conn.dead:
            return None
        self.commands_refused += 1
        return BacktestError("sessionOwnershipBusy", {
            "reason": "this connection does not own the session (ownership lost); "
                      "attach again"})

    def startup(self) -> Iterator[Step]:
        """What follows a create: stages, ``sessionCreated``, the anchor slot, ready."""
        for stage in STARTUP_STAGES:
            yield Status(stage)
        yield SessionCreated(self.id, f"/backtest/{self.id}")
        yield SlotNotification(self.create.start_slot)
        yield from self._pause()

    def multiplexed_startup(self) -> Iterator[Step]:
        """A sub-session's start once ``sessionsCreatedV2`` was sent: the anchor, ready."""
        yield SlotNotification(self.create.start_slot)
        yield from self._pause()

    def check_continue(self) -> BacktestError | None:
        if self.completed:
            return BacktestError("noMoreBlocks")
        if not self.ready:
            return BacktestError("invalidRequest", {"error": "continue while not ready"})
        return None

    def check_continue_to(self, params: ContinueToParams) -> BacktestError | None:
        """Why ``params`` cannot run now (None: it can); the session does not move.

        The target must not lie behind the session's position (equal is allowed:
        it pauses there at once), nor past the range, and a batch index must
        exist in its slot (0 for a slot without a block).
        """
        refusal = self.check_continue()
        if refusal is not None:
            return refusal
        # Where the session rests, as its client was told: paused before a batch, or
        # right after the last executed block (whatever slots without a block follow).
        if self.paused_at is not None:
            behind = (params.slot, params.batch_index) <= self.paused_at
            here = f"paused at slot {self.paused_at[0]} batch {self.paused_at[1]}"
        else:
            behind = params.slot <= self.last_executed
            here = f"after slot {self.last_executed}"
        if behind:
            return BacktestError("invalidRequest", {"error": (
                f"continueTo: target slot {params.slot} batch {params.batch_index} is not "
                f"ahead of the session's position ({here})")})
        if params.slot > self.create.end_slot:
            return BacktestError("invalidRequest", {"error": (
                f"continueTo: slot {params.slot} is past the session's end slot "
                f"{self.create.end_slot}")})
        batches = len(self.chain.batches(params.slot))
        if params.batch_index >= max(batches, 1):
            return BacktestError("invalidRequest", {"error": (
                f"continueTo: batch_index {params.batch_index} is out of range: slot "
                f"{params.slot} has {batches} batches")})
        return None

    def run_continue(self, params: ContinueParams) -> Iterator[Step]:
        """Advance ``advance_count`` produced blocks (fewer at the end of the range).

        From a pause, the rest of the paused block is the first of them, and the
        transactions run right before the batch the session paused at.
        The state changes at once (not when the steps are consumed), so a second
        continue arriving while these steps are still being sent is refused.
        """
        self._start_step(params.transactions)
        return self._advance(params.advance_count, params.transactions)

    def run_continue_to(self, params: ContinueToParams) -> Iterator[Step]:
        """Run everything before batch ``batch_index`` of ``slot``, then pause (the
        caller checked it with :meth:`check_continue_to`)."""
        self._start_step(params.transactions)
        return self._advance_to(params, params.transactions)

    def _start_step(self, transactions: tuple[str, ...]) -> None:
        self.ready = False
        self.paused_at = None
        self.continues_received += 1
        self.user_transactions += len(transactions)
        self.injected.extend(transactions)

    def _advance(self, advance_count: int, transactions: tuple[str, ...]) -> Iterator[Step]:
        for stage in CONTINUE_STAGES:
            yield Status(stage)
        for n in range(min(advance_count, len(self.pending_slots))):
            yield self._run_block_part(None, transactions if n == 0 else ())
        yield Status(FINAL_STAGE)
        yield from self._pause()

    def _advance_to(self, target: ContinueToParams, transactions: tuple[str, ...]
                    ) -> Iterator[Step]:
        for stage in CONTINUE_STAGES:
            yield Status(stage)
        while self.pending_slots and self.pending_slots[0] < target.slot:
            yield self._run_block_part(None, transactions)
            transactions = ()
        if self.pending_slots and self.pending_slots[0] == target.slot:
            if transactions or self.position_batch < target.batch_index:
                yield self._run_block_part(target.batch_index, transactions)
        elif transactions and self.pending_slots:
            yield self._run_block_part(0, transactions)
        yield Status(FINAL_STAGE)
        if not self.pending_slots:
            yield from self._pause()
            return
        self.paused_at = (target.slot, target.batch_index)
        self.pauses += 1
        self.ready = True
        yield from self._announce()
        yield Paused(target.slot, target.batch_index)

    def _run_block_part(self, stop_batch: int | None, transactions: tuple[str, ...]
                        ) -> SlotStep:
        """Run ``transactions``, then the batches of the next block from the session's
        position up to ``stop_batch`` (None: to the end of the block)."""
        slot = self.pending_slots[0]
        executed = self.open_slot
        if executed is None:
            executed = self.open_slot = ExecutedSlot(slot)
            self.buffer.append(executed)
        batches = self.chain.batches(slot)
        stop = len(batches) if stop_batch is None else stop_batch
        block = self.chain.block(slot)
        entries: list[tuple[int | None, Tx]] = [
            (None, Tx(injected_signature(tx, slot, self.position_batch),
                      user_transaction_mentions(tx), ())) for tx in transactions]
        for batch in batches[self.position_batch:stop]:
            entries.extend((i, block[i]) for i in range(batch.start, batch.stop))
            self.transactions_executed += batch.stop - batch.start
        start = executed.extend(entries)
        self.position_batch = max(self.position_batch, stop)
        if stop < len(batches):
            return SlotStep(executed, start, complete=False)
        self.pending_slots.popleft()
        self.open_slot, self.position_batch = None, 0
        self.blocks_executed += 1
        self.last_executed = slot
        actions_from = len(executed.actions)
        while self.actions_due and (self.actions_due[0][1].slot <= slot
                                    or not self.pending_slots):
            index, action = self.actions_due.popleft()
            executed.actions.append(encode_action_result(ActionResultNotification(
                0, slot, index, action.label,
                # Signed where they ran: apart from batches (negative), one per place.
                tuple(injected_signature(tx, slot, -(index * 10_000 + k + 1))
                      for k, tx in enumerate(action.transactions)))))
            self.user_transactions += len(action.transactions)
        return SlotStep(executed, start, actions_from=actions_from)

    def _announce(self) -> Iterator[Response]:
        """The next batch a discovery filter matches, at or after the session's position
        and after the last one announced: announced once, before the answer that
        brings the session to a pause, so a client deciding at the pause has it."""
        programs = [f.program_executed for f in self.create.discoveries]
        if not programs or self.scan_exhausted or not self.pending_slots:
            return
        here = (self.pending_slots[0], self.position_batch)
        for slot in self.pending_slots:
            for batch in self.chain.batches(slot):
                point = (slot, batch.index)
                if point < here or point <= self.announced:
                    continue
                matched = self.chain.batch_matches(slot, batch, programs)
                if matched:
                    self.announced = point
                    self.discoveries_sent += 1
                    yield self._discovery(slot, batch.index, matched)
                    return
        self.scan_exhausted = True  # the position only moves on: nothing will match

    def _discovery(self, slot: int, batch_index: int, matched: list[str]) -> DiscoveryBatch:
        batch = self.chain.batches(slot)[batch_index]
        programs = self.chain.programs_of(slot)
        block = self.chain.block(slot)
        indices = [i for i in range(batch.start, batch.stop) if programs[i] in matched]
        encoded = tuple(
            EncodedBinary(base64.b64encode(json.dumps({
                "signature": block[i].signature, "program": programs[i],
                "accountKeys": list(block[i].mentions)}).encode()).decode())
            for i in indices)
        return DiscoveryBatch(slot, batch_index, tuple(DiscoveryFilter(p) for p in matched),
                              encoded, tuple(indices))

    def _pause(self) -> Iterator[Response]:
        if self.pending_slots:
            self.ready = True
            yield from self._announce()
            yield ReadyForContinue()
        else:
            self.completed = True
            yield Completed(self.summary() if self.create.send_summary else None)

    def summary(self) -> dict[str, int]:
        return {
            "correct_simulation": self.transactions_executed + self.user_transactions,
            "incorrect_simulation": 0,
            "execution_errors": 0,
            "balance_diff": 0,
            "log_diff": 0,
            "blocks_executed": self.blocks_executed,
        }

    def buffered_since(self, slot: int) -> list[ExecutedSlot]:
        """The buffered slots from ``slot`` on (``replayFromSlot`` is inclusive).

        The buffer holds the notifications of the last ``PUBSUB_BUFFER_SLOTS``
        executed slots. A ``replayFromSlot`` older than the buffer replays
        everything the buffer still holds, without an error: the reference is
        silent about this case, and a ring buffer replays what it has. The client
        detects the gap (its first replayed slot is later than the one it asked
        for, or its own horizon says so) and reports it; the server cannot know
        what the client is missing.
        """
        return [executed for executed in self.buffer if executed.slot >= slot]


def error_frame(session: Session | None, error: BacktestError) -> str:
    """An error the session produced: sequenced (and replayable) when it is sequenced."""
    if session is None:
        return encode_response(Error(error))
    return session.record(Error(error))


def refusal_frame(error: BacktestError) -> str:
    """An answer to one connection's request that the session did not act on.

    Invalid requests, commands from a connection without ownership: these are
    not session events, so they carry no ``seqId`` and never enter the replay
    log. A client flooding a session with garbage grows nothing.
    """
    return encode_response(Error(error))
