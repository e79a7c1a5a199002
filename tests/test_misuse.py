"""Unusual but legal calls: each works, or raises a typed error naming the cause, in a bound.

Regression tests for issue 11, items 1 (an interrupted ``next_event`` lost
events), 5 (a trickled upgrade reply held ``start()``), 12 (``select()`` failed
above fd 1024) and 13 (bad arguments got past the up-front checks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(seed=23, slots=300) as simulator:
        yield simulator


def _bounded(call: Callable[[], Any], seconds: float) -> BaseException | None:
    """Run ``call`` on a helper thread: its exception, or None; fail if it outlives the bound.

    A call that hangs (as ``start(timing="x")`` did) fails the test instead of the run.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True, name="bounded-call")
    thread.start()
    thread.join(seconds)
    assert outcome, f"call did not return within {seconds}s"
    return outcome[0]


# --- item 13: every entry point validates its arguments up front --------------------------


VALID = "So11111111111111111111111111111111111111112"
BAD_ADDRESSES = [
    "0" * 43,                # '0' is not in the base58 alphabet
    "I" + "1" * 42,          # neither is 'I'
    "l" * 40,                # nor 'l'
    "O" * 40,                # nor 'O'
    "1" * 31,                # too short
    "2" * 45,                # too long
    "z" * 44,                # base58, but more than 32 bytes
    " " + VALID[1:],         # blank
]


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


