"""What the application sees: events, connection statuses and the session error.

Events are frozen value objects with no receive timestamps inside, so two runs
over the same chain deliver equal events and a test can compare runs directly.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from protocol import BacktestError, ContinueParams, ContinueToParams, EncodedBinary

# --- connection status ----------------------------------------------------------------


@attrs.frozen
class Connecting:
    """Before the first ``Up`` of this connection."""


@attrs.frozen
class Up:
    """Connected, handshake done, streaming."""


@attrs.frozen
class Reconnecting:
    """Lost; restart ``attempt`` will be made after ``delay`` seconds."""

    attempt: int
    delay: float
    reason: str


@attrs.frozen
class Failed:
    """Gave up: terminal error or reconnect budget spent."""

    reason: str


@attrs.frozen
class Closed:
    """Closed on purpose (end of session or shutdown)."""


ConnectionStatus = Connecting | Up | Reconnecting | Failed | Closed

# --- session identity ------------------------------------------------------------------


@attrs.frozen
class SessionInfo:
    """Identity of a created session; ``rpc_endpoint`` is an absolute http(s) URL."""

    session_id: str
    rpc_endpoint: str
    task_id: str | None = None


# --- events -----------------------------------------------------------------------------


@attrs.frozen
class ReadyForContinue:
    """The session is paused and accepts the next continue."""


@attrs.frozen
class Paused:
    """The session stopped at a ``send_continue_to`` target: right before batch
    ``batch_index`` of ``slot``. What ran before it is visible to RPC reads now; it
    accepts the next ``send_continue`` (which finishes this block first) or
    ``send_continue_to``."""

    slot: int
    batch_index: int | None = None


@attrs.frozen
class DiscoveryBatch:
    """An upcoming batch matches a discovery filter of ``CreateSession.discoveries``.

    ``send_continue_to(ContinueToParams(slot, batch_index))`` pauses right before
    it. The server announces the next one before the answer (``ReadyForContinue``
    or ``Paused``) that brings the session to rest, so at rest the latest
    announcement is the next discovery; none since the last rest: no more
    (``advance_to_discovery`` relies on it). ``matched``: the filters it matched;
    ``transactions``: the matching transactions, encoded; ``transaction_indices``:
    their positions in the block.
    """

    slot: int
    batch_index: int
    matched: tuple[Any, ...] = ()
    transactions: tuple[EncodedBinary, ...] = ()
    transaction_indices: tuple[int, ...] = ()

    def continue_to(self, transactions: tuple[str, ...] = ()) -> ContinueToParams:
        """The ``ContinueToParams`` that pause right before this batch."""
        return ContinueToParams(self.slot, self.batch_index, transactions)


@attrs.frozen
class Slot:
    """The control reported ``slot``: the first one is the start slot (the anchor);
    every later one is a *produced block* that was executed.

    Slots and blocks differ: about one slot in ten on mainnet (and in the local
    simulator) has no produced block and is skipped, so a range of N slots
    yields fewer ``Slot`` events, and ``ContinueParams.advance_count`` counts
    blocks, not slots.
    """

    slot: int


@attrs.frozen
class Status:
    """A stage of the session's start-up or of a continue (``preparingBundle``,
    ``decodedTransactions``, ...); an unknown stage name is kept as it came."""

    stage: str


@attrs.frozen
class Transaction:
    """A transaction mentioning at least one subscribed address, delivered once.

    ``matched``: the subscribed addresses it mentions, in subscription order.
    The server notifies a transaction once per matching subscription; the
    session delivers it once, so ``matched`` is how you learn the others. It
    is the address the first notification came for plus every other
    subscribed address found among the transaction's account keys (the
    ``message.accountKeys`` of a JSON-encoded transaction); from a server that
    sends the transaction in another encoding it may name only the first.
    ``index``: its position in the block, when the server sends it.
    """

    slot: int
    signature: str
    transaction: Any = None
    meta: Any = None
    index: int | None = None
    matched: tuple[str, ...] = ()


@attrs.frozen
class AccountDiff:
    """A write to a subscribed account; ``write_index``: its position among the slot's
    writes, when the server sends it."""

    slot: int
    account: str
    signature: str
    pre: Any = None
    post: Any = None
    write_index: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(signature, account)``: what identifies a diff (deduplication, cursors)."""
        return (self.signature, self.account)


@attrs.frozen
class ActionResult:
    """A scheduled action of ``CreateSession.actions`` ran after the block of ``slot``:
    ``action_index`` is its place in that list, ``status`` ``"executed"`` (or the
    server's word for a failure, with ``error``), ``signatures`` those of its
    transactions. Delivered once each, in the order they ran, through
    ``subscribe_actions()``."""

    slot: int
    action_index: int
    label: str = ""
    signatures: tuple[str, ...] = ()
    status: str = "executed"
    error: str | None = None
    index: None = None  # no position in a block: a resume keeps the arrival order

    @property
    def key(self) -> str:
        """What identifies it (deduplication, cursors)."""
        return f"action-{self.action_index}"


@attrs.frozen
class Completed:
    """End of range; every subscription item was delivered before this."""

    summary: dict[str, Any] | None = None


@attrs.frozen
class Error:
    """A server error that is not terminal for the session; the application decides."""

    error: BacktestError


@attrs.frozen
class Gap:
    """Events of ``stream`` in the executed slots ``first_slot..=last_slot`` may be lost.

    They fell out of the server's replay buffer (the last 100 executed slots)
    before the stream's link came back, so no replay can bring them. Only a
    session allowed to run further ahead than the buffer (``max_run_ahead`` >
    100) can meet one; the default never does. ``slots``: executed slots in the
    range.
    """

    stream: str
    addresses: tuple[str, ...]
    first_slot: int
    last_slot: int
    slots: int


@attrs.frozen
class ContinueLost:
    """A continue written just before the control connection died never reached the
    server.

    The evidence (actors/DESIGN.md §3): the session re-attached (the old connection can
    deliver nothing more), the attach replay is complete, and no sequenced
    response newer than the continue's write point came within
    ``Timing.quiet_window``. ``resent``: the session wrote ``params`` once more
    (policy ``"resend"``); otherwise (``"raise"``) the continue is dropped and
    the application decides: ``send_continue(params)`` again, or shut down.
    """

    params: ContinueParams | ContinueToParams
    resent: bool


@attrs.frozen
class ConnectionChanged:
    """A connection's status changed: ``name`` is ``"control"``, ``"transactions"`` or
    ``"account_diffs"``; ``status`` one of :data:`ConnectionStatus`."""

    name: str  # "control", "transactions" or "account_diffs"
    status: ConnectionStatus


StreamEvent = Transaction | AccountDiff | ActionResult  # what a subscription delivers

CONTROL = "control"  # the control connection's name in ConnectionChanged and status()

ManagedEvent = (
    ReadyForContinue | Slot | Status | Transaction | AccountDiff | Completed | Error
    | ConnectionChanged | Gap | ContinueLost | Paused | DiscoveryBatch | ActionResult
)

# --- errors -------------------------------------------------------------------------------

ErrorKind = Literal[
    "create", "control_failed", "subscription_failed", "cancelled", "closed",
    "continue_outstanding", "internal", "attach", "invalid_argument",
]


class ManagedSessionError(Exception):
    """The session cannot go on (or a request was refused); ``kind`` says why.

    ``create``: the session was never created. ``control_failed`` /
    ``subscription_failed``: a connection failed for good. ``cancelled`` /
    ``closed``: the session was shut down. ``continue_outstanding``: a continue
    was sent while another one had not been answered yet. ``attach``: a cursor's
    session could not be attached (expired, unknown, or another key's).
    ``invalid_argument``: a request the session refused before sending it (a
    ``continue_to`` target behind the session or past its range; the reason
    names the field); it is also a ``ValueError``. ``internal``: a bug
    inside the session (the cause is chained as ``__cause__`` and named in the
    reason); it is raised only after every event queued before it.
    """

    def __init__(self, kind: ErrorKind, reason: str = "") -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}" if reason else kind)


class InvalidArgument(ManagedSessionError, ValueError):
    """``ManagedSessionError(kind="invalid_argument")``: refused before anything was sent;
    ``reason`` starts with the field at fault."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid_argument", reason)


@attrs.frozen
class SessionFailed:
    """Told to a ``listener`` actor once, as the last message, when the session fails."""

    error: ManagedSessionError = attrs.field(eq=False)
