"""Precise stepping through the blocking front door: pause before every discovered
batch, inject there, go on; exact against ``expected()``."""

from __future__ import annotations

import base64

import attrs
import pytest

import actors
from actors import (
    Completed,
    ContinueToParams,
    DiscoveryBatch,
    DiscoveryFilter,
    Error,
    InvalidArgument,
    ManagedBacktestSession,
    ManagedEvent,
    Paused,
    ReadyForContinue,
    Slot,
    Transaction,
)
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.chain import user_transaction
from tests.support.harness import FAST, QUICK_RETRY, check_exact, no_leaks

pytestmark = pytest.mark.backtest_simulator(seed=4, slots=400)
SPAN = 150


def _start(sim: LocalSimulator, programs: list[str], **kwargs: object
           ) -> ManagedBacktestSession:
    first, _ = sim.available_range()
    create = CreateSession(first, first + SPAN,
                           discoveries=[DiscoveryFilter(p) for p in programs])
    kwargs.setdefault("timing", FAST)
    return ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY, create,
                                        policy=QUICK_RETRY, **kwargs)  # type: ignore[arg-type]


def test_advance_to_discovery_pauses_before_each_batch_once_and_injects(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    program, address = sim.programs[-1], sim.addresses[0]
    probe = [user_transaction([address], "probe")]
    expected = sim.expected(first, first + SPAN, transactions=[address], discover=[program],
                            inject=probe)
    assert len(expected.discoveries) >= 10
    events: list[ManagedEvent] = []
    pauses = []
    with no_leaks(FAST.graceful_close + 1), _start(sim, [program],
                                                   transactions=[address]) as session:
        inject: tuple[str, ...] = ()
        while True:
            step = session.advance_to_discovery(inject, timeout=10)
            events.extend(step.events)
            if step.exhausted:
                break
            assert step.paused is not None and step.discovery is not None
            assert (step.paused.slot, step.paused.batch_index) == (
                step.discovery.slot, step.discovery.batch_index)
            pauses.append((step.paused.slot, step.paused.batch_index))
            inject = tuple(probe)
        session.send_continue(ContinueParams(10_000, inject), timeout=10)
        while not isinstance(events[-1], Completed):
            events.append(session.next_event(timeout=10))
        stats = sim.session_stats(session.session_info.session_id)
    assert pauses == expected.discoveries
    discovered = [(e.slot, e.batch_index) for e in events if isinstance(e, DiscoveryBatch)]
    assert discovered == expected.discoveries
    assert [(e.slot, e.batch_index) for e in events if isinstance(e, Paused)] == pauses
    check_exact(events, expected)
    assert [e.signature for e in events if isinstance(e, Transaction)] == expected.signatures
    assert stats.pauses == len(pauses) and stats.discoveries == len(discovered)
    # One continue-to per discovery and one continue to the end: nothing advanced twice.
    assert stats.continues_received == len(pauses) + 1
    assert stats.blocks_executed == len(expected.slots) - 1


def test_bad_continue_to_is_refused_before_anything_is_sent(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with _start(sim, []) as session:
        while not isinstance(session.next_event(timeout=10), ReadyForContinue):
            pass
        sent_before = sim.session_stats(session.session_info.session_id).continues_received
        for params, field in ((ContinueToParams(first, 0), "slot: 400000000 is not ahead"),
                              (ContinueToParams(first + SPAN + 1, 0), "past the session's end")):
            with pytest.raises(InvalidArgument, match=field):
                session.send_continue_to(params, timeout=5)
        with pytest.raises(TypeError, match="params: expected ContinueToParams"):
            session.send_continue_to(ContinueParams(), timeout=5)  # type: ignore[arg-type]
        assert sim.session_stats(session.session_info.session_id).continues_received == sent_before
        # A batch index the slot does not have: the server's error, the session stays put.
        slot = sim.chain.produced_in(first + 1, first + SPAN)[0]
        batches = len(sim.chain.batches(slot))
        session.send_continue_to(ContinueToParams(slot, batches), timeout=5)
        event = session.next_event(timeout=10)
        while not isinstance(event, Error):
            event = session.next_event(timeout=10)
        assert "out of range" in str(event.error)
        session.send_continue_to(ContinueToParams(slot, batches - 1), timeout=5)
        event = session.next_event(timeout=10)
        while not isinstance(event, Paused):
            event = session.next_event(timeout=10)
        assert (event.slot, event.batch_index) == (slot, batches - 1)
        with pytest.raises(InvalidArgument, match="not ahead of the session, paused at"):
            session.send_continue_to(ContinueToParams(slot, batches - 1), timeout=5)


def test_a_cursor_taken_at_a_pause_attaches_paused_at_the_same_batch(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    program = sim.programs[-1]
    expected = sim.expected(first, first + SPAN, discover=[program])
    pauses: list[tuple[int, int | None]] = []
    with no_leaks(FAST.graceful_close + 1):
        with _start(sim, [program]) as session:
            for _ in range(3):
                step = session.advance_to_discovery(timeout=10)
                assert step.paused is not None
                pauses.append((step.paused.slot, step.paused.batch_index))
            cursor = session.cursor()
            session.detach()
        assert cursor.paused_at == pauses[-1] and cursor.at_rest
        assert cursor.ahead and cursor.ahead[0] > pauses[-1]  # type: ignore[operator]
        again = actors.Cursor.from_json(cursor.to_json())
        assert again == cursor
        with ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, again, timing=FAST,
                                           policy=QUICK_RETRY) as session:
            slot, batch = pauses[-1]
            with pytest.raises(InvalidArgument, match="paused at"):
                session.send_continue_to(ContinueToParams(slot, batch or 0), timeout=5)
            while not (step := session.advance_to_discovery(timeout=10)).exhausted:
                assert step.paused is not None
                pauses.append((step.paused.slot, step.paused.batch_index))
            session.send_continue(ContinueParams(10_000), timeout=10)
            while not isinstance(session.next_event(timeout=10), Completed):
                pass
            stats = sim.session_stats(session.session_info.session_id)
    assert pauses == expected.discoveries
    assert stats.blocks_executed == len(expected.slots) - 1


def test_a_continue_to_handed_back_as_lost_ends_the_step_and_loses_nothing(
        sim: LocalSimulator) -> None:
    """on_lost_continue="raise": the ContinueLost ends the step (it was the answer), the
    session rests, and the next step goes on (a hostile review saw it wait for ever)."""
    from actors import ContinueLost

    first, _ = sim.available_range()
    program = sim.programs[-1]
    expected = sim.expected(first, first + SPAN, discover=[program])
    timing = attrs.evolve(FAST, continue_quiet=0.2)
    with _start(sim, [program], timing=timing, on_lost_continue="raise") as session:
        first_pause = session.advance_to_discovery(timeout=10).paused
        sim.faults.lose_next_continue()
        step = session.advance_to_discovery(timeout=10)
        lost = [e for e in step.events if isinstance(e, ContinueLost)]
        assert len(lost) == 1 and not lost[0].resent and step.paused is None
        assert step.discovery is not None
        again = session.advance_to_discovery(timeout=10)  # the same target, sent again
        assert again.paused is not None and again.discovery == step.discovery
    assert first_pause is not None
    assert [(first_pause.slot, first_pause.batch_index),
            (again.paused.slot, again.paused.batch_index)] == expected.discoveries[:2]


def test_a_step_that_raises_gives_back_every_event_it_took(sim: LocalSimulator) -> None:
    """Bad transactions are refused before anything is taken; a step cut by its timeout
    leaves what it took for the next takes (the review saw 5 slots and a ready lost)."""
    first, _ = sim.available_range()
    with _start(sim, [sim.programs[-1]]) as session:
        while not isinstance(session.next_event(timeout=10), ReadyForContinue):
            pass
        session.send_continue(ContinueParams(5), timeout=5)
        with pytest.raises(ValueError, match=r"transactions\[0\]"):
            session.advance_to_discovery(["not base64!!"], timeout=5)
        taken = []
        while not isinstance(event := session.next_event(timeout=10), ReadyForContinue):
            taken.append(event)
        assert [e.slot for e in taken if isinstance(e, Slot)] == sim.chain.produced_in(
            first + 1, first + SPAN)[:5]
        # A step cut short: its events come back, in order, before anything newer.
        session.send_continue(ContinueParams(3), timeout=5)
        with pytest.raises(TimeoutError):
            session.advance_to_discovery(timeout=0)
        back = []
        while not isinstance(event := session.next_event(timeout=10), ReadyForContinue):
            back.append(event)
        assert [e.slot for e in back if isinstance(e, Slot)] == sim.chain.produced_in(
            first + 1, first + SPAN)[5:8]


def test_a_continue_to_the_server_refuses_as_too_big_ends_with_an_error_not_retries(
        sim: LocalSimulator) -> None:
    """Over the server's frame limit (1 MiB here) the server closes with 1009: the
    continue-to never ran, so it is not written again (the review saw ten resends and the
    session fail); the step ends with an Error and the session goes on."""
    from actors import Error

    big = [base64.b64encode(bytes(1500)).decode()] * 1500  # about 3 MB of transactions
    # The reconnects are counted exactly: a keepalive longer than FAST's, which a busy
    # machine can miss.
    timing = attrs.evolve(FAST, keepalive_interval=0.5, keepalive_deadline=5.0)
    with _start(sim, [sim.programs[-1]], timing=timing) as session:
        assert session.advance_to_discovery(timeout=10).paused is not None
        step = session.advance_to_discovery(big, timeout=10)
        errors = [e for e in step.events if isinstance(e, Error)]
        assert step.paused is None and len(errors) == 1
        assert errors[0].error.kind == "requestTooLarge"
        stats = session.stats()
        assert stats["continues_resent"] == 0 and stats["reconnects"]["control"] == 1
        after = session.advance_to_discovery(timeout=10)  # the same target, smaller: runs
        assert after.paused is not None and after.discovery == step.discovery
