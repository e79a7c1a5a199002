"""Precise stepping through the other front doors: asyncio, the control handle and an
application actor (a ``SessionListener`` that answers each rest itself)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from actors import (
    AsyncBacktestSession,
    Completed,
    DiscoveryBatch,
    DiscoveryFilter,
    ManagedBacktestSession,
    Paused,
    ReadyForContinue,
    SessionListener,
    spawn_control,
)
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import FAST, QUICK_RETRY, no_leaks, wait_for

pytestmark = pytest.mark.backtest_simulator(seed=12, slots=300)
SPAN = 100


def _create(sim: LocalSimulator) -> CreateSession:
    first, _ = sim.available_range()
    return CreateSession(first, first + SPAN, discoveries=[DiscoveryFilter(sim.programs[-1])])


def _expected(sim: LocalSimulator) -> list[tuple[int, int]]:
    first, _ = sim.available_range()
    return sim.expected(first, first + SPAN, discover=[sim.programs[-1]]).discoveries


def test_asyncio_advance_to_discovery(sim: LocalSimulator) -> None:
    async def main() -> list[tuple[int, int | None]]:
        pauses = []
        session = await AsyncBacktestSession.start(sim.url, DEFAULT_API_KEY, _create(sim),
                                                   timing=FAST, policy=QUICK_RETRY)
        async with session:
            while not (step := await session.advance_to_discovery(timeout=10)).exhausted:
                assert step.paused is not None
                pauses.append((step.paused.slot, step.paused.batch_index))
            await session.send_continue(ContinueParams(10_000), timeout=10)
            async for _ in session:
                pass
        return pauses

    with no_leaks(FAST.graceful_close + 1):
        pauses = asyncio.run(main())
    assert pauses == _expected(sim) and len(pauses) > 3


def test_control_handle_send_continue_to(sim: LocalSimulator) -> None:
    pauses = []
    with no_leaks(FAST.graceful_close + 1), spawn_control(
            sim.url, DEFAULT_API_KEY, _create(sim), timing=FAST, policy=QUICK_RETRY) as control:
        ahead: list[DiscoveryBatch] = []
        while True:
            event = control.next_event(timeout=10)
            if isinstance(event, DiscoveryBatch):
                ahead.append(event)
            elif isinstance(event, ReadyForContinue | Paused):
                if isinstance(event, Paused):
                    pauses.append((event.slot, event.batch_index))
                    ahead = [d for d in ahead if (d.slot, d.batch_index) > pauses[-1]]
                if ahead:
                    control.send_continue_to(ahead[0].continue_to(), timeout=10)
                else:
                    control.send_continue(ContinueParams(10_000), timeout=10)
            elif isinstance(event, Completed):
                break
    assert pauses == _expected(sim)


class _Stepper(SessionListener):
    """An application actor: at each rest, continue-to the newest announced batch."""

    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done = done
        self.ahead: list[DiscoveryBatch] = []
        self.pauses: list[tuple[int, int | None]] = []

    def on_event(self, event: Any) -> None:
        if isinstance(event, DiscoveryBatch):
            self.ahead.append(event)
        elif isinstance(event, ReadyForContinue | Paused):
            if isinstance(event, Paused):
                self.pauses.append((event.slot, event.batch_index))
                self.ahead = [d for d in self.ahead
                              if (d.slot, d.batch_index) > self.pauses[-1]]
            if self.ahead:
                self.send_continue_to(self.ahead[0].continue_to())
            else:
                self.send_continue(ContinueParams(10_000))
        elif isinstance(event, Completed):
            self.done.set()

    def on_receive(self, message: Any) -> Any:
        if message == "pauses":
            return list(self.pauses)
        return super().on_receive(message)


def test_an_application_actor_steps_with_tell(sim: LocalSimulator) -> None:
    done = threading.Event()
    with no_leaks(FAST.graceful_close + 1):
        listener = _Stepper.start(done)
        session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY, _create(sim),
                                               timing=FAST, policy=QUICK_RETRY,
                                               listener=listener)
        try:
            wait_for(done.is_set, 20, "Completed told to the actor")
            pauses = listener.ask("pauses", timeout=5)
        finally:
            session.shutdown()
            listener.stop()
    assert pauses == _expected(sim)
