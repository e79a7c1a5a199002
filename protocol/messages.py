"""Control-channel messages (``/backtest``), as frozen attrs value objects.

Field names are the Python (snake_case) names; the codec decides the casing on
the wire (camelCase for ``createBacktestSession``/``continue`` params,
snake_case for struct variants such as ``attachBacktestSession``), see
protocol/WIRE.md. Constructors validate user arguments so that a bad argument is
rejected before anything is sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import attrs

MAX_DISCONNECT_TIMEOUT_SECS = 900

# Upper bounds of the wire's Rust integer types (wire-protocol.md §3): a larger value
# cannot be decoded by the server, so it is refused here, before anything is sent.
U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# Solana public keys: 32 bytes written in base58 (Bitcoin alphabet), 32 to 44 characters.
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_DIGITS = {c: i for i, c in enumerate(BASE58_ALPHABET)}
PUBKEY_BYTES = 32
PUBKEY_MIN_CHARS, PUBKEY_MAX_CHARS = 32, 44


def is_pubkey(text: object) -> bool:
    """True for a base58 string that decodes to exactly 32 bytes (a Solana public key).

    The length and alphabet alone admit strings of 44 characters that decode to
    33 bytes, which the server's ``Pubkey::from_str`` rejects, so the value is
    decoded too. Leading ``1`` characters stand for leading zero bytes.
    """
    if not isinstance(text, str) or not PUBKEY_MIN_CHARS <= len(text) <= PUBKEY_MAX_CHARS:
        return False
    number = 0
    for char in text:
        digit = _BASE58_DIGITS.get(char)
        if digit is None:
            return False
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return zeros + (number.bit_length() + 7) // 8 == PUBKEY_BYTES


def pubkey_problem(value: object) -> str | None:
    """Why ``value`` is not a public key (for an error that names the field), or None."""
    if not isinstance(value, str):
        return f"expected a base58 public key (str), got {type(value).__name__}"
    if not is_pubkey(value):
        return (f"expected a base58 public key ({PUBKEY_MIN_CHARS}-{PUBKEY_MAX_CHARS} "
                f"characters of {PUBKEY_BYTES} bytes), got {value!r:.60}")
    return None


# --- validators -----------------------------------------------------------------


def _int_in(low: int, high: int) -> Any:
    """An attrs validator: an ``int`` (never a bool) in ``low..=high``, named in the error."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(
                f"{attribute.name}: expected an integer in {low}..{high}, got {value!r:.60}")

    return check


def _optional(validator: Any) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return check


_non_negative_int = _int_in(0, U64_MAX)


def _bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise TypeError(f"{attribute.name}: expected a bool, got {value!r:.60}")


def _str_tuple(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{attribute.name}: expected a sequence of non-empty strings")


def _pubkey_tuple(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _str_tuple(inst, attribute, value)
    assert isinstance(value, tuple)
    for index, item in enumerate(value):
        problem = pubkey_problem(item)
        if problem is not None:
            raise ValueError(f"{attribute.name}[{index}]: {problem}")


def _pubkey(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = pubkey_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


def _to_tuple(value: Iterable[str]) -> Any:
    """Accept any list-like for tuple fields, but never a bare string.

    Annotated with what a caller may pass (attrs shows it in ``__init__``'s
    signature, so ``help(ContinueParams)`` says ``transactions: Iterable[str]``);
    anything else is passed through unchanged for the validator to name.
    """
    if isinstance(value, str | bytes):
        return value
    try:
        return tuple(value)
    except TypeError:
        return value


def is_base64(text: str) -> bool:
    """Standard alphabet, padded: what the server decodes transactions with."""
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# --- requests (client -> server) --------------------------------------------------


@attrs.frozen
class DiscoveryFilter:
    """A discovery filter of ``CreateSession.discoveries``: announce every upcoming batch
    with a transaction that invokes ``program_executed`` (a base58 program id).

    The reference's ``DiscoveryFilter::ProgramExecuted(Address)``, an externally
    tagged enum: on the wire ``{"programExecuted": "<program id>"}`` (camelCase
    variant, as every enum of this protocol; the casing could not be read from
    the reference, see protocol/WIRE.md, Stepping). It is the one kind the
    reference's 0.7-0.21 API has; a kind this client does not know, received in
    ``discoveryBatch.matched``, is kept as its raw JSON.
    """

    program_executed: str = attrs.field(validator=_pubkey)


def _filters(value: Any) -> Any:
    if isinstance(value, DiscoveryFilter):
        return (value,)
    return _to_tuple(value)


def _filter_tuple(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ValueError(f"{attribute.name}: expected a sequence of DiscoveryFilter")
    for index, item in enumerate(value):
        if not isinstance(item, DiscoveryFilter):
            raise ValueError(f"{attribute.name}[{index}]: expected a DiscoveryFilter "
                             f"(e.g. DiscoveryFilter(program_executed=...)), got {item!r:.60}")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name}: duplicate filters")


@attrs.frozen
class ScheduledAction:
    """A scheduled action of ``CreateSession.actions``: ``transactions`` (base64) run right
    after the first block at or after ``slot`` (after the range's last block when no
    block comes at or after it); its result comes on the action subscription
    (``actionSubscribe``). ``label`` names it in the result. The wire shape is this
    project's choice (protocol/WIRE.md, Actions): ``{"slot", "transactions", "label"}``.
    """

    slot: int = attrs.field(validator=_int_in(0, U64_MAX))
    transactions: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_str_tuple)
    label: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @transactions.validator
    def _check_transactions(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not value:
            raise ValueError(f"{attribute.name}: an action runs at least one transaction")
        for index, tx in enumerate(value):
            if not is_base64(tx):
                raise ValueError(f"{attribute.name}[{index}]: not valid base64")


def _actions(value: Any) -> Any:
    return _to_tuple(value)


def _action_tuple(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ValueError(f"{attribute.name}: expected a sequence of ScheduledAction")
    for index, item in enumerate(value):
        if not isinstance(item, ScheduledAction):
            raise ValueError(f"{attribute.name}[{index}]: expected a ScheduledAction, got "
                             f"{item!r:.60}")
        if not inst.start_slot <= item.slot <= inst.end_slot:
            raise ValueError(f"{attribute.name}[{index}].slot: {item.slot} is outside the "
                             f"range {inst.start_slot}..={inst.end_slot}")


# Fields a conservative writer leaves out when empty: a server that predates them
# must not see them (the codec reads this metadata).
OMIT_IF_EMPTY = {"omit_if_empty": True}


@attrs.frozen
class CreateSession:
    """``createBacktestSession``: replay ``start_slot..=end_slot`` (slots, skipped ones
    included; only produced blocks run).

    Knobs: ``signer_filter=()`` (base58 keys: only transactions signed by one of
    them are simulated; fewer transactions, less work), ``send_summary=True``
    (the ``Completed`` event carries the server's counters),
    ``disconnect_timeout_secs=900`` (how long the server keeps the session after
    its control connection drops, for a reconnect or a resume; at most 900; 0:
    no ``seqId`` and no resume), ``capacity_wait_timeout_secs=None`` (how long
    the server may queue the create while it has no capacity; None: its
    default), ``extra_compute_units=None`` (a compute budget added per
    transaction; None: none). Every argument is checked on construction
    (``ValueError`` naming the field), before anything is sent.
    ``discoveries=()``: :class:`DiscoveryFilter` values; the session then announces
    each upcoming matching batch (``discoveryBatch``) so that a ``continueTo`` can
    stop right before it. ``parallel=False``: True asks the server to split the
    range into sub-sessions driven over this one control connection
    (``sessionsCreatedV2``; ``actors.ManagedParallelSession``). ``actions=()``:
    :class:`ScheduledAction` values, each run after a block of the range, its
    result on the action subscription.
    """

    start_slot: int = attrs.field(validator=_int_in(0, U64_MAX))
    end_slot: int = attrs.field(validator=_int_in(0, U64_MAX))
    signer_filter: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_pubkey_tuple
    )
    send_summary: bool = attrs.field(default=True, validator=_bool)
    disconnect_timeout_secs: int = attrs.field(default=MAX_DISCONNECT_TIMEOUT_SECS)
    capacity_wait_timeout_secs: int | None = attrs.field(
        default=None, validator=_optional(_int_in(0, U16_MAX))
    )
    extra_compute_units: int | None = attrs.field(
        default=None, validator=_optional(_int_in(0, U32_MAX))
    )
    discoveries: tuple[DiscoveryFilter, ...] = attrs.field(
        default=(), converter=_filters, validator=_filter_tuple, metadata=OMIT_IF_EMPTY
    )
    parallel: bool = attrs.field(default=False, validator=_bool, metadata=OMIT_IF_EMPTY)
    actions: tuple[ScheduledAction, ...] = attrs.field(
        default=(), converter=_actions, validator=_action_tuple, metadata=OMIT_IF_EMPTY
    )

    @end_slot.validator
    def _check_range(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < self.start_slot:
            raise ValueError(
                f"end_slot: must be >= start_slot ({self.start_slot}), got {value}"
            )

    @disconnect_timeout_secs.validator
    def _check_disconnect(self, _attribute: attrs.Attribute[int], value: int) -> None:
        # The server silently clamps larger values; refusing them is clearer.
        if type(value) is not int or not 0 <= value <= MAX_DISCONNECT_TIMEOUT_SECS:
            raise ValueError(
                "disconnect_timeout_secs: expected an integer in "
                f"0..{MAX_DISCONNECT_TIMEOUT_SECS}, got {value!r}"
            )


@attrs.frozen
class EncodedBinary:
    """Account data on the wire: ``data`` encoded as ``encoding`` (only ``base64``)."""

    data: str
    encoding: str = "base64"


def _account_data_bytes(value: EncodedBinary | bytes | bytearray) -> Any:
    if isinstance(value, bytes | bytearray):
        return EncodedBinary(base64.b64encode(bytes(value)).decode("ascii"))
    return value


@attrs.frozen
class AccountData:
    """An account override for ``modifyAccountStates``; ``data`` may be raw bytes."""

    data: EncodedBinary = attrs.field(converter=_account_data_bytes)
    executable: bool = attrs.field(validator=_bool)
    lamports: int = attrs.field(validator=_non_negative_int)
    owner: str = attrs.field(validator=_pubkey)
    space: int = attrs.field(validator=_non_negative_int)

    @data.validator
    def _check_data(self, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, EncodedBinary) or value.encoding != "base64":
            raise ValueError("data: expected bytes or EncodedBinary(encoding='base64')")
        if not is_base64(value.data):
            raise ValueError("data.data: not valid base64")


def _transactions(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _str_tuple(_inst, attribute, value)
    assert isinstance(value, tuple)
    for index, tx in enumerate(value):
        if not is_base64(tx):
            raise ValueError(f"transactions[{index}]: not valid base64")


def _account_states(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{attribute.name}: expected a mapping of address -> AccountData")
    for address, account in value.items():
        problem = pubkey_problem(address)
        if problem is not None:
            raise ValueError(f"{attribute.name}[{address}]: {problem}")
        if not isinstance(account, AccountData):
            raise ValueError(f"{attribute.name}[{address}]: expected AccountData")


@attrs.frozen
class ContinueParams:
    """``continue``: advance ``advance_count`` produced blocks, injecting ``transactions``.

    Knobs: ``advance_count=1`` (produced blocks, not slots: skipped slots do not
    count; larger means fewer round trips, and the session splits it into
    chunks of at most ``max_run_ahead``), ``transactions=()`` (your own signed,
    serialized transactions, base64, any iterable: run before the next block),
    ``modify_account_states={}`` (address -> :class:`AccountData`: accounts
    overwritten before the transactions run). Checked on construction
    (``ValueError`` naming the field), before anything is sent.
    """

    # u64 on the wire; the server would refuse a larger count only after it was sent.
    advance_count: int = attrs.field(default=1, validator=_int_in(1, U64_MAX))
    transactions: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_transactions
    )
    modify_account_states: dict[str, AccountData] = attrs.field(
        factory=dict, validator=_account_states
    )


@attrs.frozen
class ContinueToParams:
    """``continueTo``: execute up to, but not including, batch ``batch_index`` of
    ``slot``, then pause (the server answers ``paused``).

    ``(slot, batch_index)`` is usually a :class:`DiscoveryBatch`'s. Everything
    before the target runs: whole blocks of earlier slots, then the batches of
    ``slot`` before ``batch_index``; the state those leave is what RPC reads see
    at the pause. ``transactions=()`` (base64, as for ``continue``) run first, at
    the session's current position: at a pause, right before the batch it
    paused at. Checked on construction (``ValueError`` naming the field); the
    session also refuses, before sending, a target that is not ahead of its
    position or lies past its range.

    The wire shape is this project's choice where the reference could not be
    read (protocol/WIRE.md, Stepping): camelCase ``{"slot", "batchIndex",
    "transactions"}``, ``transactions`` left out when empty.
    """

    slot: int = attrs.field(validator=_int_in(0, U64_MAX))
    batch_index: int = attrs.field(validator=_int_in(0, U32_MAX))
    transactions: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_transactions, metadata=OMIT_IF_EMPTY
    )

    def after(self, slot: int, batch_index: int | None) -> bool:
        """True when the target lies strictly after the point ``(slot, batch_index)``
        (``batch_index`` None: after the whole of ``slot``)."""
        if batch_index is None:
            return self.slot > slot
        return (self.slot, self.batch_index) > (slot, batch_index)


@attrs.frozen
class Attach:
    """``attachBacktestSession``: replay responses after ``last_sequence``."""

    session_id: str
    last_sequence: int | None = None


@attrs.frozen
class AttachParallel:
    """``attachParallelControlSessionV2``: re-attach every sub-session of a parallel
    control session, replaying each one's responses after its ``last_sequences``
    entry (a sub-session left out replays its whole buffer)."""

    control_session_id: str
    last_sequences: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class ContinueSession:
    """``continueSessionV1`` / ``continueToSessionV1``: a continue or continue-to for one
    sub-session of a parallel control session (``params`` says which)."""

    session_id: str
    params: ContinueParams | ContinueToParams


@attrs.frozen
class CloseSession:
    """``closeSessionV1``: close one sub-session of a parallel control session."""

    session_id: str


@attrs.frozen
class Resume:
    """``resumeAttachedSession`` (unit variant)."""


@attrs.frozen
class Close:
    """``closeBacktestSession`` (unit variant)."""


Request = (CreateSession | ContinueParams | ContinueToParams | Attach | Resume | Close
           | AttachParallel | ContinueSession | CloseSession)

# --- responses (server -> client) --------------------------------------------------


@attrs.frozen
class SessionCreated:
    """``sessionCreated``: the session exists; ``rpc_endpoint`` (a URL or a path) is where
    its PubSub streams are."""

    session_id: str
    rpc_endpoint: str
    task_id: str | None = None


@attrs.frozen
class SessionAttached:
    """``sessionAttached``: an attach was accepted (the replay follows the resume)."""

    session_id: str
    rpc_endpoint: str
    task_id: str | None = None


@attrs.frozen
class ReadyForContinue:
    """``readyForContinue``: the session is paused and accepts the next continue."""


@attrs.frozen
class SlotNotification:
    """``slotNotification``: the start slot, then each executed (produced) block."""

    slot: int


@attrs.frozen
class Status:
    """A start-up or per-continue stage; unknown stage names are kept as they came."""

    status: str


@attrs.frozen
class Completed:
    """``completed``: the range is done; ``summary`` holds the server's counters (or None
    when the create asked for no summary)."""

    summary: dict[str, Any] | None = None


@attrs.frozen
class Paused:
    """``paused``: the session stopped at a ``continueTo`` target, before batch
    ``batch_index`` of ``slot``; it accepts the next ``continue`` or ``continueTo``."""

    slot: int
    batch_index: int | None = None


@attrs.frozen
class DiscoveryBatch:
    """``discoveryBatch``: an upcoming batch matches a discovery filter.

    ``(slot, batch_index)`` fed to ``continueTo`` pauses right before it.
    ``matched``: the filters it matched (a kind this client does not know stays
    raw JSON). ``transactions``: the matching transactions, encoded;
    ``transaction_indices``: their positions in the slot's block. The server
    announces it ahead of execution, before it answers the continue that
    brought the session near it (protocol/WIRE.md, Stepping).
    """

    slot: int
    batch_index: int
    matched: tuple[Any, ...] = ()
    transactions: tuple[EncodedBinary, ...] = ()
    transaction_indices: tuple[int, ...] = ()


@attrs.frozen
class SessionsCreated:
    """``sessionsCreatedV2``: a parallel create's sub-sessions, after one
    ``sessionCreated`` each; the i-th session runs ``start_slots[i]..=end_slots[i]``."""

    control_session_id: str
    session_ids: tuple[str, ...]
    task_ids: tuple[str | None, ...] = ()
    start_slots: tuple[int, ...] = ()
    end_slots: tuple[int, ...] = ()


@attrs.frozen
class ParallelAttached:
    """``parallelSessionAttachedV2``: a parallel re-attach was accepted; each
    sub-session's replay follows (as ``sessionEventV2``), then the resume's ``success``."""

    control_session_id: str
    session_ids: tuple[str, ...]
    task_ids: tuple[str | None, ...] = ()


@attrs.frozen
class SessionEvent:
    """``sessionEventV2``: sub-session ``session_id``'s response ``event`` (any session
    response, ``readyForContinue`` to ``completed``), numbered ``seq_id`` in that
    sub-session's own sequence."""

    session_id: str
    seq_id: int | None
    event: Any


@attrs.frozen
class Success:
    """``success``: a resume or close was done."""


# Classification from protocol/WIRE.md. ``sessionNameTaken`` is not named there; the
# reference (managed-behavior.md §6) proposes it as fatal for that name, so it is.
TERMINAL_ERROR_KINDS = frozenset(
    {
        "sessionNotFound",
        "sessionOwnerMismatch",
        "bundleNotFound",
        "noProducedBlocksInRange",
        "noMoreBlocks",
        "advanceSlotFailed",
        "finalizeSlotFailed",
        "sessionNameTaken",
    }
)
RETRYABLE_HANDSHAKE_ERROR_KINDS = frozenset({"sessionOwnershipBusy", "internal", "clerkError"})


@attrs.frozen
class BacktestError:
    """A server ``BacktestError``: camelCase variant name plus its fields."""

    kind: str
    fields: dict[str, Any] = attrs.field(factory=dict)

    @property
    def terminal(self) -> bool:
        """The session cannot go on after it (``sessionNotFound``, ``invalid*``, ...)."""
        return self.kind in TERMINAL_ERROR_KINDS or self.kind.startswith("invalid")

    @property
    def retryable_in_handshake(self) -> bool:
        """A handshake answered with it may be tried again after a backoff."""
        return self.kind in RETRYABLE_HANDSHAKE_ERROR_KINDS

    def __str__(self) -> str:
        detail = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"{self.kind}({detail})" if detail else self.kind


@attrs.frozen
class Error:
    """``error``: a server error, typed as a :class:`BacktestError`."""

    error: BacktestError


@attrs.frozen
class UnknownResponse:
    """A method this client does not know: kept, never an exception (tolerant reader)."""

    method: str
    params: Any = None


Response = (
    SessionCreated
    | SessionAttached
    | ReadyForContinue
    | SlotNotification
    | Status
    | Completed
    | Success
    | Error
    | Paused
    | DiscoveryBatch
    | SessionsCreated
    | ParallelAttached
    | SessionEvent
    | UnknownResponse
)
