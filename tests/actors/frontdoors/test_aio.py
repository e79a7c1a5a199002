"""The asyncio front door: a full session with drops under ``asyncio.run``, and
cancellation at random points that loses nothing and leaves nothing behind."""

from __future__ import annotations

import asyncio
import random
import threading

import pykka
import pytest

from actors import Completed, ManagedEvent, ReadyForContinue
from actors.frontdoors.aio import AsyncBacktestSession
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import FAST, FAULT_POLICY, check_exact, no_leaks, wait_for

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
