"""Control-channel messages (``/backtest``), as frozen attrs value objects.

Field names are the Python (snake_case) names; the codec decides the casing on
the wire (camelCase for ``createBacktestSession``/``continue`` params,
snake_case for struct variants such as ``attachBacktestSession``), see
DESIGN.md §3. Constructors validate user arguments so that a bad argument is
rejected before anything is sent.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import attrs

MAX_DISCONNECT_TIMEOUT_SECS = 900

# --- validators -----------------------------------------------------------------


def _non_negative_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name}: expected an integer >= 0, got {value!r}")


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name}: expected an integer >= 1, got {value!r}")


def _optional_non_negative_int(
    inst: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _non_negative_int(inst, attribute, value)


def _str_tuple(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{attribute.name}: expected a sequence of non-empty strings")


def _to_tuple(value: Any) -> Any:
    """Accept any list-like for tuple fields, but never a bare string."""
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
class CreateSession:
    """``createBacktestSession``: replay ``start_slot..=end_slot``."""

    start_slot: int = attrs.field(validator=_non_negative_int)
    end_slot: int = attrs.field(validator=_non_negative_int)
    signer_filter: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_str_tuple
    )
    send_summary: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    disconnect_timeout_secs: int = attrs.field(default=MAX_DISCONNECT_TIMEOUT_SECS)
    capacity_wait_timeout_secs: int | None = attrs.field(
        default=None, validator=_optional_non_negative_int
    )
    extra_compute_units: int | None = attrs.field(
        default=None, validator=_optional_non_negative_int
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
    data: str
    encoding: str = "base64"


def _account_data_bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return EncodedBinary(base64.b64encode(bytes(value)).decode("ascii"))
    return value


@attrs.frozen
class AccountData:
    """An account override for ``modifyAccountStates``; ``data`` may be raw bytes."""

    data: EncodedBinary = attrs.field(converter=_account_data_bytes)
    executable: bool
    lamports: int = attrs.field(validator=_non_negative_int)
    owner: str
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
        if not isinstance(address, str) or not address:
            raise ValueError(f"{attribute.name}: address {address!r} is not a non-empty string")
        if not isinstance(account, AccountData):
            raise ValueError(f"{attribute.name}[{address}]: expected AccountData")


@attrs.frozen
class ContinueParams:
    """``continue``: advance ``advance_count`` produced blocks, injecting ``transactions``."""

    advance_count: int = attrs.field(default=1, validator=_positive_int)
    transactions: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_transactions
    )
    modify_account_states: dict[str, AccountData] = attrs.field(
        factory=dict, validator=_account_states
    )


@attrs.frozen
class Attach:
    """``attachBacktestSession``: replay responses after ``last_sequence``."""

    session_id: str
    last_sequence: int | None = None


@attrs.frozen
class Resume:
    """``resumeAttachedSession`` (unit variant)."""


@attrs.frozen
class Close:
    """``closeBacktestSession`` (unit variant)."""


Request = CreateSession | ContinueParams | Attach | Resume | Close

# --- responses (server -> client) --------------------------------------------------


@attrs.frozen
class SessionCreated:
    session_id: str
    rpc_endpoint: str
    task_id: str | None = None


@attrs.frozen
class SessionAttached:
    session_id: str
    rpc_endpoint: str
    task_id: str | None = None


@attrs.frozen
class ReadyForContinue:
    pass


@attrs.frozen
class SlotNotification:
    slot: int


@attrs.frozen
class Status:
    """A start-up or per-continue stage; unknown stage names are kept as they came."""

    status: str


@attrs.frozen
class Completed:
    summary: dict[str, Any] | None = None


@attrs.frozen
class Success:
    pass


# Classification from DESIGN.md §3. ``sessionNameTaken`` is not named there; the
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
        return self.kind in TERMINAL_ERROR_KINDS or self.kind.startswith("invalid")

    @property
    def retryable_in_handshake(self) -> bool:
        return self.kind in RETRYABLE_HANDSHAKE_ERROR_KINDS

    def __str__(self) -> str:
        detail = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"{self.kind}({detail})" if detail else self.kind


@attrs.frozen
class Error:
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
    | UnknownResponse
)
