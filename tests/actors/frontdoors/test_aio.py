"""The asyncio front door: a full session with drops under ``asyncio.run``, and
cancellation at random points that loses nothing and leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from typing import Any

import pykka
import pytest

from actors import (
    Completed,
    Connecting,
    ManagedEvent,
    ReadyForContinue,
    Up,
)
from actors.frontdoors.aio import AsyncBacktestSession
from protocol import ContinueParams, CreateSession, ReconnectPolicy
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import FAST, FAULT_POLICY, FAULT_SERVER, check_exact, no_leaks, wait_for

pytestmark = pytest.mark.backtest_simulator(seed=47, slots=200)


def test_a_full_session_with_drops_under_asyncio_run(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    sim, proxy = net
    first, _ = sim.available_range()
    end = first + 100
    tx, diffs = list(sim.addresses[:3]), list(sim.addresses[2:5])
    expected = sim.expected(first, end, transactions=tx, account_diffs=diffs)
    events: list[ManagedEvent] = []
    peak_threads = [0]

    async def main() -> dict[str, object]:
        async with await AsyncBacktestSession.start(
                proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, end),
                timing=FAST, policy=FAULT_POLICY) as session:
            session.subscribe_transactions(tx)
            session.subscribe_account_diffs(diffs)
            running = threading.active_count()
            written = 0
            async for event in session:
                events.append(event)
                peak_threads[0] = max(peak_threads[0], threading.active_count() - running)
                if isinstance(event, ReadyForContinue):
                    await session.send_continue(ContinueParams(advance_count=2), timeout=20)
                    written += 1
                    if written in (5, 20):
                        proxy.reset("all")
                    elif written == 12:
                        proxy.reset("pubsub")
            return session.stats()

    with no_leaks(FAST.graceful_close + 2):
        stats = asyncio.run(main())
    check_exact(events, expected)
    assert stats["double_advances"] == 0
    assert stats["reconnects"]["control"] == 2  # type: ignore[index]
    assert stats["reconnects"]["transactions"] == 3  # type: ignore[index]
    # No thread per call: only reconnects replace reader threads (one out, one in),
    # so the count never grows past the running session's by more than a restart's.
    assert peak_threads[0] <= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cancelled_waits_lose_nothing_and_shutdown_leaves_nothing(seed: int) -> None:
    """A consumer task is cancelled at random moments (inside next_event and
    inside send_continue); a new task carries on. The whole run is still exact,
    and shutdown after a last cancelled ``async for`` leaves no thread, no actor."""
    rng = random.Random(seed)
    with LocalSimulator(seed=53, slots=150) as sim:
        first, _ = sim.available_range()
        end = first + 100
        tx, diffs = list(sim.addresses[:2]), list(sim.addresses[2:4])
        expected = sim.expected(first, end, transactions=tx, account_diffs=diffs)
        events: list[ManagedEvent] = []
        threads_before = threading.active_count()

        async def consume(session: AsyncBacktestSession) -> None:
            async for event in session:
                events.append(event)
                if isinstance(event, ReadyForContinue):
                    await session.send_continue(ContinueParams(advance_count=1), timeout=20)

        async def main() -> int:
            session = await AsyncBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                                       CreateSession(first, end),
                                                       timing=FAST, policy=FAULT_POLICY)
            session.subscribe_transactions(tx)
            session.subscribe_account_diffs(diffs)
            cancels = 0
            while not any(isinstance(e, Completed) for e in events):
                task = asyncio.create_task(consume(session))
                try:
                    await asyncio.wait_for(task, rng.uniform(0.0001, 0.004))
                except TimeoutError:
                    cancels += 1
            await session.shutdown()
            return cancels

        cancels = asyncio.run(main())
        print(f"\n{cancels} cancellations")
        check_exact(events, expected)
        assert cancels >= 5
        # The short-lived shutdown thread ends just after it answered the loop.
        wait_for(lambda: threading.active_count() == threads_before, 2, "threads back")
        assert pykka.ActorRegistry.get_all() == []


def test_a_cancelled_async_for_mid_run_then_shutdown_leaves_nothing() -> None:
    with LocalSimulator(seed=59, slots=150) as sim:
        first, _ = sim.available_range()
        threads_before = threading.active_count()
        seen: list[ManagedEvent] = []

        async def main() -> None:
            session = await AsyncBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                                       CreateSession(first, first + 100),
                                                       timing=FAST, policy=FAULT_POLICY)
            session.subscribe_transactions(sim.addresses[:2])

            async def consume() -> None:
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ReadyForContinue):
                        await session.send_continue(ContinueParams(advance_count=1))

            task = asyncio.create_task(consume())
            while sum(isinstance(e, ReadyForContinue) for e in seen) < 10:
                await asyncio.sleep(0.001)  # a yield to the consumer, not a settle
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await session.shutdown()

        asyncio.run(main())
        assert not any(isinstance(e, Completed) for e in seen)
        # The short-lived shutdown thread ends just after it answered the loop.
        wait_for(lambda: threading.active_count() == threads_before, 2, "threads back")
        assert pykka.ActorRegistry.get_all() == []


LEAK_GRACE = FAST.graceful_close + 2


async def _drain_to_ready(session: AsyncBacktestSession) -> None:
    while not isinstance(await session.next_event(timeout=5), ReadyForContinue):
        pass


@pytest.mark.backtest_simulator(seed=61, slots=200, liveness=FAULT_SERVER)
def test_aio_next_event_after_shutdown_raises_closed_every_time(sim: LocalSimulator) -> None:
    """After shutdown (no take outstanding), the first next_event raises
    ManagedSessionError(closed) but leaves an orphan take future in the facade; the
    second call then waits on that future for ever (here: until its timeout)."""
    first, _ = sim.available_range()
    outcomes: list[BaseException] = []

    async def main() -> None:
        session = await AsyncBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                                   CreateSession(first, first + 10),
                                                   timing=FAST, policy=FAULT_POLICY)
        await _drain_to_ready(session)
        await session.shutdown()
        for _ in range(2):
            try:
                await session.next_event(timeout=2)
            except BaseException as exc:  # noqa: BLE001 - recorded, asserted below
                outcomes.append(exc)

    with no_leaks(LEAK_GRACE):
        asyncio.run(main())
    assert [type(e).__name__ for e in outcomes] == ["ManagedSessionError"] * 2, outcomes
    assert all(e.kind == "closed" for e in outcomes)  # type: ignore[attr-defined]


@pytest.mark.backtest_simulator(seed=61, slots=200, liveness=FAULT_SERVER)
def test_aio_two_concurrent_next_event_tasks_get_no_assertion_error(sim: LocalSimulator) -> None:
    """Two tasks await next_event on one session; a batch of one event lands. The
    first task gets it; the second wakes to an empty buffer and hits
    ``assert self._error is not None`` (an untyped AssertionError; under -O,
    ``raise None``). It should wait on for the next event (or be refused with a
    typed error up front)."""
    first, _ = sim.available_range()
    results: list[Any] = []

    async def main() -> None:
        async with await AsyncBacktestSession.start(
                sim.url, DEFAULT_API_KEY, CreateSession(first, first + 10), timing=FAST,
                policy=FAULT_POLICY) as session:
            await _drain_to_ready(session)
            one = asyncio.create_task(session.next_event(timeout=5))
            two = asyncio.create_task(session.next_event(timeout=5))
            await asyncio.sleep(0)  # both tasks are now awaiting the same take
            # Exactly one event is queued at once: ConnectionChanged(transactions, Connecting).
            session.subscribe_transactions(sim.addresses[:1])
            results.extend(await asyncio.gather(one, two, return_exceptions=True))

    with no_leaks(LEAK_GRACE):
        asyncio.run(main())
    assert not [r for r in results if isinstance(r, AssertionError)], results
    assert [type(r).__name__ for r in results] == ["ConnectionChanged"] * 2, results
    assert [r.status for r in results] == [Connecting(), Up()]


@pytest.mark.backtest_simulator(seed=61, slots=200, liveness=FAULT_SERVER)
def test_aio_session_used_from_a_second_event_loop_is_answered_or_refused(
        sim: LocalSimulator) -> None:
    """``session = asyncio.run(AsyncBacktestSession.start(...))`` then
    ``asyncio.run(use(session))``: the facade keeps the first (closed) loop, the
    take's answer is scheduled on it, call_soon_threadsafe's RuntimeError is
    swallowed, and next_event in the new loop times out although events are queued
    (without a timeout it hangs for ever; the batch is stranded in the take).
    It should either work or raise a clear error at once."""
    first, _ = sim.available_range()
    outcome: list[Any] = []
    with no_leaks(LEAK_GRACE):
        session = asyncio.run(AsyncBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                                         CreateSession(first, first + 10),
                                                         timing=FAST, policy=FAULT_POLICY))

        async def use() -> None:
            try:
                outcome.append(await session.next_event(timeout=2))
            except BaseException as exc:  # noqa: BLE001 - asserted below
                outcome.append(exc)
            await session.shutdown()

        asyncio.run(use())
    assert not isinstance(outcome[0], TimeoutError), (
        "next_event in a second loop timed out with events queued")
    assert not isinstance(outcome[0], BaseException) or isinstance(outcome[0], RuntimeError)


@pytest.mark.backtest_simulator(seed=61, slots=200)
def test_aio_cancelled_start_stops_its_attempt(net: tuple[LocalSimulator, FaultProxy]) -> None:
    """A start cancelled while the server refuses connects: the session's
    supervisor, timer thread and helper thread keep retrying until the policy's
    budget is spent (max_total; 300 s by default), long after asyncio.run
    returned. Cancelling should shut the starting session down within
    graceful_close + margin, as an interrupted blocking start does."""
    sim, proxy = net
    first, _ = sim.available_range()
    stubborn = ReconnectPolicy(initial=0.01, multiplier=2.0, max_delay=0.1, jitter=0.2,
                               max_attempts=10_000, max_total=8.0, uptime_reset=5.0,
                               rng=random.Random(0))
    proxy.refuse(15)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(AsyncBacktestSession.start(
                proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, first + 10),
                timing=FAST, policy=stubborn), 0.3)

    try:
        with no_leaks(LEAK_GRACE):
            asyncio.run(main())
    finally:
        _let_orphans_end(stubborn.max_total + 4)


def _let_orphans_end(timeout: float) -> None:
    """Leave nothing running into the next test (bounded; not an assertion)."""
    try:
        wait_for(lambda: not pykka.ActorRegistry.get_all() and not any(
            t.name == "backtest-async-step" for t in threading.enumerate()), timeout,
            "orphaned start to give up")
    except AssertionError:
        pass


@pytest.mark.backtest_simulator(seed=61, slots=200)
def test_aio_start_failing_after_its_loop_closed_leaves_no_thread_exception(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """The start's helper thread handles "loop gone" only on success: when the
    orphaned start fails after the loop closed, ``call_soon_threadsafe`` raises
    ``RuntimeError('Event loop is closed')`` out of the thread (printed by
    threading.excepthook). Nothing should escape the helper thread."""
    sim, proxy = net
    first, _ = sim.available_range()
    short = ReconnectPolicy(initial=0.01, multiplier=2.0, max_delay=0.05, jitter=0.2,
                            max_attempts=10_000, max_total=1.0, uptime_reset=5.0,
                            rng=random.Random(0))
    escaped: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: escaped.append(args.exc_value)
    try:
        proxy.refuse(10)

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(AsyncBacktestSession.start(
                    proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, first + 10),
                    timing=FAST, policy=short), 0.2)

        asyncio.run(main())
        # The start gives up after max_total (1 s) and its helper thread ends.
        wait_for(lambda: not pykka.ActorRegistry.get_all() and not any(
            t.name == "backtest-async-step" for t in threading.enumerate()),
            short.max_total + 4, "the orphaned start to give up")
    finally:
        threading.excepthook = previous
    assert escaped == []


@pytest.mark.backtest_simulator(seed=61, slots=200)
def test_aio_a_cancelled_continue_refused_later_reports_nothing_to_the_loop(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """The module docstring: a cancelled send_continue still goes, and "if the
    supervisor refuses it, the refusal is applied to the cursor even though nobody
    waits". It is, but the refusal is also set on the facade's ``written`` future
    that nobody awaits any more, so asyncio reports "Future exception was never
    retrieved" (an ERROR log with a ManagedSessionError traceback) when it is
    collected. Nobody waits: nothing should be reported."""
    sim, proxy = net
    first, _ = sim.available_range()
    reported: list[str] = []

    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: reported.append(str(context.get("message"))))
        async with await AsyncBacktestSession.start(
                proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, first + 60),
                timing=FAST, policy=FAULT_POLICY) as session:
            await _drain_to_ready(session)
            # Held in the proxy: the server never gets it, so it stays outstanding
            # (its answer cannot race the next continue, however fast the server runs).
            proxy.blackhole("control")
            await session.send_continue(ContinueParams(advance_count=30), timeout=5)
            # Handed over before its first await; refused: the first is outstanding.
            second = asyncio.create_task(session.send_continue(ContinueParams(advance_count=1)))
            await asyncio.sleep(0)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            await _drain_to_ready(session)
            refused = int(session.stats()["continues_refused"])
            del second
            gc.collect()
            return refused

    with no_leaks(LEAK_GRACE):
        refused = asyncio.run(main())
    assert refused == 1
    assert reported == []


@pytest.mark.backtest_simulator(seed=61, slots=200)
def test_aio_two_refused_concurrent_continues_leave_the_cursor_on_the_outstanding_one(
        net: tuple[LocalSimulator, FaultProxy]) -> None:
    """A continue of 60 slots is outstanding; two tasks each call send_continue (1
    and 2 slots). Both are refused (continue_outstanding). Each call recorded its
    continue write-ahead and, on refusal, restores the ``previous`` it saw: the
    second saw the first's (refused) continue as previous. So the cursor ends up
    holding ``advance_count=1`` as sent and unanswered, a continue that never
    went, instead of the outstanding 60 (a cursor persisted now resumes the wrong
    continue under the lost-continue rule)."""
    sim, proxy = net
    first, _ = sim.available_range()

    async def main() -> tuple[Any, Any, int]:
        async with await AsyncBacktestSession.start(
                proxy.url_for(sim.url), DEFAULT_API_KEY, CreateSession(first, first + 100),
                timing=FAST, policy=FAULT_POLICY) as session:
            await _drain_to_ready(session)
            # Held in the proxy: the server never gets it, so it stays outstanding
            # (its answer cannot race the next continue, however fast the server runs).
            proxy.blackhole("control")
            await session.send_continue(ContinueParams(advance_count=60), timeout=5)
            results = await asyncio.gather(
                session.send_continue(ContinueParams(advance_count=1), timeout=5),
                session.send_continue(ContinueParams(advance_count=2), timeout=5),
                return_exceptions=True)
            pending = session.cursor().pending_continue
            return results, pending, int(session.stats()["continues_refused"])

    with no_leaks(LEAK_GRACE):
        results, pending, refused = asyncio.run(main())
    assert refused == 2
    assert [getattr(r, "kind", r) for r in results] == ["continue_outstanding"] * 2
    assert pending is not None
    assert pending.params == ContinueParams(advance_count=60), pending
