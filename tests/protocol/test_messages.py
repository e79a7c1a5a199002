"""Request fields are bounded by their wire types, and the largest legal values pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol import ContinueParams, CreateSession

VALID = "So11111111111111111111111111111111111111112"


@pytest.mark.parametrize("make,field", [
    (lambda: ContinueParams(advance_count=2**64), "advance_count"),
    (lambda: ContinueParams(advance_count=2**80), "advance_count"),
    (lambda: ContinueParams(advance_count=1.0), "advance_count"),
    (lambda: CreateSession(2**64, 2**64), "start_slot"),
    (lambda: CreateSession(1, 2**64), "end_slot"),
    (lambda: CreateSession(1, 2, disconnect_timeout_secs=-1), "disconnect_timeout_secs"),
    (lambda: CreateSession(1, 2, capacity_wait_timeout_secs=2**16),
     "capacity_wait_timeout_secs"),
    (lambda: CreateSession(1, 2, extra_compute_units=2**32), "extra_compute_units"),
    (lambda: CreateSession(1, 2, signer_filter=(VALID, "not-base58")), "signer_filter[1]"),
    (lambda: CreateSession(1, 2, send_summary=1), "send_summary"),
    (lambda: ContinueParams(modify_account_states={"0x12": None}),
     "modify_account_states[0x12]"),
])
def test_request_fields_are_bounded_by_their_wire_types(make: Callable[[], Any],
                                                         field: str) -> None:
    escaped = field.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises((ValueError, TypeError), match=f"^{escaped}"):
        make()


def test_largest_wire_values_are_accepted() -> None:
    assert ContinueParams(advance_count=2**64 - 1).advance_count == 2**64 - 1
    assert CreateSession(2**64 - 1, 2**64 - 1, capacity_wait_timeout_secs=2**16 - 1,
                         extra_compute_units=2**32 - 1, signer_filter=(VALID,)).end_slot == (
        2**64 - 1)
