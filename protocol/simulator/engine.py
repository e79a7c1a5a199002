"""Session state of the local simulator, free of I/O.

The server feeds requests in and gets back what to send; it owns the sockets.
A session keeps every sequenced response it produced (``log``) so that an
attach can replay what a dropped client missed, and the notifications of the
last :data:`PUBSUB_BUFFER_SLOTS` executed slots so that a subscription can
resume with ``replayFromSlot``.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator, Mapping

import attrs

from ..codec import encode_notification_result, encode_response
from ..messages import (
    BacktestError,
    Completed,
    ContinueParams,
    CreateSession,
    Error,
    ReadyForContinue,
    Response,
    SessionCreated,
    SlotNotification,
    Status,
)
from ..pubsub import (
    NOTIFICATION_METHOD,
    PUBSUB_BUFFER_SLOTS,
    AccountDiffNotification,
    StreamKind,
    TransactionNotification,
)
from .chain import Chain, Tx

STARTUP_STAGES = ("preparingBundle", "bundleReady", "startingRuntime")
CONTINUE_STAGES = (
    "decodedTransactions",
    "appliedAccountModifications",
    "readyToExecuteUserTransactions",
    "executedUserTransactions",
    "executingBlockTransactions",
)
FINAL_STAGE = "executedBlockTransactions"


class ExecutedSlot:
    """A block that was executed, kept for live delivery and the replay buffer.

    A notification's ``result`` is encoded on first use and then reused for every
    subscriber and every replay, so the cost is paid only for what is sent.
    """

    __slots__ = ("slot", "txs", "_tx_json", "_diff_json", "_first_write")

    def __init__(self, slot: int, txs: tuple[Tx, ...]) -> None:
        self.slot = slot
        self.txs = txs
        self._tx_json: dict[int, str] = {}
        self._diff_json: dict[tuple[int, int], str] = {}
        # Position of each transaction's first account write in the slot.
        self._first_write = [0]
        for tx in txs:
            self._first_write.append(self._first_write[-1] + len(tx.diffs))

    def notifications(self, subs: Mapping[tuple[StreamKind, str], list[int]]
                      ) -> Iterator[tuple[str, str, int]]:
        """``(method, result_json, subscription)`` for each match, in chain order."""
        tx_method = NOTIFICATION_METHOD["transactions"]
        diff_method = NOTIFICATION_METHOD["account_diffs"]
        for i, tx in enumerate(self.txs):
            for address in tx.mentions:
                for sub_id in subs.get(("transactions", address), ()):
                    yield tx_method, self._tx_result(i), sub_id
            for j, diff in enumerate(tx.diffs):
                for sub_id in subs.get(("account_diffs", diff.account), ()):
                    yield diff_method, self._diff_result(i, j), sub_id

    def _tx_result(self, i: int) -> str:
        cached = self._tx_json.get(i)
        if cached is None:
            tx = self.txs[i]
            cached = self._tx_json[i] = encode_notification_result(TransactionNotification(
                0, self.slot, tx.signature,
                {"signatures": [tx.signature], "message": {"accountKeys": list(tx.mentions)}},
                {"err": None, "fee": 5000}, index=i,
            ))
        return cached

    def _diff_result(self, i: int, j: int) -> str:
        cached = self._diff_json.get((i, j))
        if cached is None:
            tx = self.txs[i]
            diff = tx.diffs[j]
            cached = self._diff_json[(i, j)] = encode_notification_result(
                AccountDiffNotification(0, self.slot, diff.account, tx.signature,
                                        {"lamports": diff.pre}, {"lamports": diff.post},
                                        write_index=self._first_write[i] + j))
        return cached


@attrs.frozen
class SlotStep:
    """A block was executed: push its notifications, then send its slot notification."""

    executed: ExecutedSlot


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
    log: list[tuple[int, str]] = attrs.field(factory=list)
    buffer: deque[ExecutedSlot] = attrs.field(
        factory=lambda: deque(maxlen=PUBSUB_BUFFER_SLOTS))
    continues_received: int = 0
    blocks_executed: int = 0
    user_transactions: int = 0
    transactions_executed: int = 0

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
        return session, None

    @property
    def sequenced(self) -> bool:
        return self.create.disconnect_timeout_secs > 0

    def record(self, msg: Response) -> str:
        """Encode a session response, giving it the next ``seqId`` when sequenced."""
        if not self.sequenced:
            return encode_response(msg)
        frame = encode_response(msg, self.next_seq)
        self.log.append((self.next_seq, frame))
        self.next_seq += 1
        return frame

    def replay_after(self, last_sequence: int | None) -> list[str]:
        after = -1 if last_sequence is None else last_sequence
        return [frame for seq, frame in self.log if seq > after]

    def startup(self) -> Iterator[Step]:
        """What follows a create: stages, ``sessionCreated``, the anchor slot, ready."""
        for stage in STARTUP_STAGES:
            yield Status(stage)
        yield SessionCreated(self.id, f"/backtest/{self.id}")
        yield SlotNotification(self.create.start_slot)
        yield from self._pause()

    def check_continue(self) -> BacktestError | None:
        if self.completed:
            return BacktestError("noMoreBlocks")
        if not self.ready:
            return BacktestError("invalidRequest", {"error": "continue while not ready"})
        return None

    def run_continue(self, params: ContinueParams) -> Iterator[Step]:
        """Advance ``advance_count`` produced blocks (fewer at the end of the range).

        The state changes at once (not when the steps are consumed), so a second
        continue arriving while these steps are still being sent is refused.
        """
        self.ready = False
        self.continues_received += 1
        self.user_transactions += len(params.transactions)
        return self._advance(params.advance_count)

    def _advance(self, advance_count: int) -> Iterator[Step]:
        for stage in CONTINUE_STAGES:
            yield Status(stage)
        for _ in range(min(advance_count, len(self.pending_slots))):
            slot = self.pending_slots.popleft()
            executed = ExecutedSlot(slot, self.chain.block(slot))
            self.buffer.append(executed)
            self.blocks_executed += 1
            self.transactions_executed += len(executed.txs)
            yield SlotStep(executed)
        yield Status(FINAL_STAGE)
        yield from self._pause()

    def _pause(self) -> Iterator[Response]:
        if self.pending_slots:
            self.ready = True
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
        return [executed for executed in self.buffer if executed.slot >= slot]


def error_frame(session: Session | None, error: BacktestError) -> str:
    if session is None:
        return encode_response(Error(error))
    return session.record(Error(error))
