"""Unusual but legal calls: each works, or raises a typed error naming the cause, in a bound.

Regression tests for issue 11, items 1 (an interrupted ``next_event`` lost
events), 5 (a trickled upgrade reply held ``start()``), 12 (``select()`` failed
above fd 1024) and 13 (bad arguments got past the up-front checks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from actors import (
    Completed,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
)
from actors.cli import main as cli_main
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.harness import FAST, QUICK_RETRY, check_exact, no_leaks, start, wait_for


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


# --- item 1: an interrupted next_event() loses nothing ----------------------------------


def test_non_numeric_timeouts_are_refused_before_anything_is_asked(sim: LocalSimulator
                                                                   ) -> None:
    """Item 13/1: a bad ``timeout`` is a TypeError naming it, and takes or sends nothing."""
    first, _ = sim.available_range()
    end = first + 30
    tx = list(sim.addresses[:2])
    session = start(sim, first, end)
    try:
        session.subscribe_transactions(tx)
        sid = session.session_info.session_id
        events: list[ManagedEvent] = []
        while not events or not isinstance(events[-1], Completed):
            for bad in ("1", [1], object()):
                with pytest.raises(TypeError, match="^timeout"):
                    session.next_event(timeout=bad)  # type: ignore[arg-type]
            for worse in (-1, float("nan")):
                with pytest.raises(ValueError, match="^timeout"):
                    session.next_event(timeout=worse)
            event = session.next_event(timeout=10)
            events.append(event)
            if isinstance(event, ReadyForContinue):
                before = sim.session_stats(sid).continues_received
                with pytest.raises(TypeError, match="^timeout"):
                    session.send_continue(ContinueParams(), timeout="10")  # type: ignore[arg-type]
                assert session.stats()["continue_state"] != "outstanding"
                assert sim.session_stats(sid).continues_received == before
                session.send_continue(ContinueParams(), timeout=10)
    finally:
        session.shutdown()
    check_exact(events, sim.expected(first, end, transactions=tx))


# --- item 13: every entry point validates its arguments up front --------------------------


def test_start_rejects_bad_arguments_before_connecting(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    create = CreateSession(first, first + 5)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"url": 123}, TypeError, "url"),
        ({"url": b"ws://127.0.0.1:1/backtest"}, TypeError, "url"),
        ({"api_key": 5}, TypeError, "api_key"),
        ({"create": (first, first + 5)}, TypeError, "create"),
        ({"timing": "x"}, TypeError, "timing"),
        ({"timing": {"connect": 1}}, TypeError, "timing"),
        ({"policy": "x"}, TypeError, "policy"),
        ({"listener": "x"}, TypeError, "listener"),
        ({"listener": object()}, TypeError, "listener"),
        ({"sslopt": "x"}, TypeError, "sslopt"),
        ({"sslopt": {1: "x"}}, TypeError, "sslopt"),
        ({"max_queue": "5000"}, ValueError, "max_queue"),
        ({"max_frame_size": 2.5}, ValueError, "max_frame_size"),
    ]
    for override, kind, field in cases:
        kwargs: dict[str, Any] = {"url": sim.url, "api_key": DEFAULT_API_KEY,
                                  "create": create, "timing": FAST, "policy": QUICK_RETRY}
        kwargs.update(override)
        url, key, made = kwargs.pop("url"), kwargs.pop("api_key"), kwargs.pop("create")
        with no_leaks(2.0):
            error = _bounded(lambda: ManagedBacktestSession.start(  # noqa: B023
                url, key, made, **kwargs), 5)  # noqa: B023
        assert type(error) is kind, (override, error)
        assert str(error).startswith(f"{field}:"), (override, str(error))
    assert sim.upgrade_requests() == {}


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


def test_subscriptions_take_only_base58_public_keys(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    assert all(32 <= len(a) <= 44 for a in sim.addresses)  # the chain's own are valid
    session = start(sim, first, first + 5)
    try:
        for bad in BAD_ADDRESSES:
            for subscribe in (session.subscribe_transactions, session.subscribe_account_diffs):
                with pytest.raises(ValueError, match=r"^addresses\[1\]"):
                    subscribe([sim.addresses[0], bad])
        assert sim.upgrade_requests() == {"control": 1}  # no subscription was started
        session.subscribe_transactions([sim.addresses[0], VALID])
        wait_for(lambda: sim.upgrade_requests().get("pubsub") == 1, 5, "the subscription")
    finally:
        session.shutdown()


def test_cli_refuses_a_bad_address_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and one line, as the README promises, before the simulator starts."""
    started = time.monotonic()
    code = cli_main(["run", "--transactions", VALID, "--account-diffs", "0xdeadbeef"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("backtest-actors run: --account-diffs: expected a base58 public key")
    assert err.count("\n") == 1
    assert time.monotonic() - started < 1.0


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


def test_send_continue_revalidates_params_before_sending(sim: LocalSimulator) -> None:
    """A frozen instance changed behind attrs' back is still refused before the wire."""
    first, _ = sim.available_range()
    session = start(sim, first, first + 5)
    try:
        while not isinstance(session.next_event(timeout=5), ReadyForContinue):
            pass
        params = ContinueParams()
        object.__setattr__(params, "advance_count", 2**80)
        with pytest.raises(ValueError, match="^advance_count"):
            session.send_continue(params, timeout=5)
        assert session.stats()["continues_written"] == 0
        sid = session.session_info.session_id
        assert sim.session_stats(sid).continues_received == 0
        session.send_continue(attrs.evolve(params, advance_count=1), timeout=5)
        assert session.stats()["continues_written"] == 1
    finally:
        session.shutdown()
