"""Every front door checks its arguments before anything is sent, and names the field at
fault: timeouts (one rule: a number of seconds >= 0, huge ones meaning no bound),
addresses, options, continue parameters."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from actors import (
    Completed,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    SessionInfo,
)
from actors.frontdoors.handles import spawn_control
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import (
    FAST,
    FAULT_POLICY,
    FAULT_SERVER,
    QUICK_RETRY,
    bounded,
    check_exact,
    no_leaks,
    start,
    to_ready,
    wait_for,
)


def test_next_event_with_a_huge_integer_timeout_waits_instead_of_overflowing() -> None:
    """``_check_timeout`` treats anything past the platform's longest wait as "no
    bound" (``float('inf')`` and ``1e20`` give None), but an int too large for a
    float (``10**400``, a valid number of seconds) reaches ``math.isnan`` first
    and raises ``OverflowError``, which the documented contract (TypeError or
    ValueError for a bad timeout) does not name. It should wait without a bound
    (here: return the first event at once)."""
    with LocalSimulator(seed=3, slots=40) as sim, no_leaks(5.0):
        first, _ = sim.available_range()
        session = start(sim, first, first + 5)
        try:
            event = session.next_event(timeout=10**400)
            assert event is not None
        finally:
            session.shutdown()




@pytest.mark.backtest_simulator(seed=23, slots=300)
def test_non_numeric_timeouts_are_refused_before_anything_is_asked(sim: LocalSimulator
                                                                   ) -> None:
    """A bad ``timeout`` is a TypeError naming it, and takes or sends nothing."""
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


@pytest.mark.backtest_simulator(seed=23, slots=300)
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
            error = bounded(lambda: ManagedBacktestSession.start(  # noqa: B023
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


@pytest.mark.backtest_simulator(seed=23, slots=300)
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


@pytest.mark.backtest_simulator(seed=23, slots=300)
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


LEAK_GRACE = FAST.graceful_close + 2




@pytest.mark.backtest_simulator(seed=61, slots=200, liveness=FAULT_SERVER)
def test_handle_waits_accept_any_finite_timeout(sim: LocalSimulator) -> None:
    """timeout=1e13 passes _check_timeout (finite, >= 0) and then blows up inside
    the wait with OverflowError ("timestamp out of range for platform time_t"). For
    send_continue it is raised after the continue was handed over (the cursor
    holds it as sent; it is written). A long timeout should simply wait (or be
    refused with ValueError before anything is handed over)."""
    first, _ = sim.available_range()
    with no_leaks(LEAK_GRACE):
        with spawn_control(sim.url, DEFAULT_API_KEY, CreateSession(first, first + 10),
                           timing=FAST, policy=FAULT_POLICY) as control:
            to_ready(control)
            control.send_continue(ContinueParams(advance_count=1), timeout=1e13)
            assert control.next_event(timeout=1e13) is not None


@pytest.mark.backtest_simulator(seed=61, slots=200, liveness=FAULT_SERVER)
def test_spawn_control_names_its_own_parameter_in_a_type_error(sim: LocalSimulator) -> None:
    """spawn_control(url, key, session) takes a CreateSession or a Cursor; a wrong
    type is reported as ``create: expected CreateSession, got SessionInfo`` (the
    parameter of ManagedBacktestSession.start, and no word of Cursor). A careless
    caller who hands it the SessionInfo of another handle should read which
    parameter is wrong and what it accepts."""
    with no_leaks(LEAK_GRACE):
        with pytest.raises(TypeError) as raised:
            spawn_control(sim.url, DEFAULT_API_KEY, SessionInfo("a", "b"))  # type: ignore[arg-type]
    assert str(raised.value).startswith("session:"), raised.value
    assert "Cursor" in str(raised.value)
