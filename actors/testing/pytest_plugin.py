"""pytest fixtures for code that drives backtest sessions (registered by entry point).

Installing ``backtest-actors`` is enough: pytest loads this plugin through the
``pytest11`` entry point, and a test asks for the fixtures by name:

* ``backtest_simulator``: a :class:`~protocol.simulator.LocalSimulator` on a free
  port of 127.0.0.1, closed after the test. ``@pytest.mark.backtest_simulator(
  seed=3, slots=500)`` passes arguments to it.
* ``backtest_session``: a factory, ``backtest_session(slot_count=100, ...)``,
  that starts a :class:`~actors.ManagedBacktestSession` on that simulator with
  its fast timing and reconnect policy (a dead connection is found in a second),
  subscribed to every address of the chain unless told otherwise;
  ``backtest_session.expected(session)`` is what that session must deliver.
  Every session it started is shut down after the test, and the leak check
  below then applies.
* ``backtest_leak_check``: fails the test if it leaves library threads or pykka
  actors behind (waited for with a deadline: a session's threads end shortly
  after ``shutdown`` returns).

With :func:`actors.testing.assert_exact` and the simulator's aimed faults, a
harness test is a few lines; see ``actors/testing/TESTING.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pykka
import pytest

from protocol import CreateSession
from protocol.simulator import DEFAULT_API_KEY, Expected, LocalSimulator

from ..frontdoors.blocking import ManagedBacktestSession

LEAK_DEADLINE = 10.0  # seconds for threads and actors to end after the test
LEAK_POLL = 0.02


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("backtest_leak_deadline", f"seconds backtest_leak_check waits for threads "
                  f"and actors to end (default {LEAK_DEADLINE:g})", default=str(LEAK_DEADLINE))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backtest_simulator(**kwargs): arguments for the backtest_simulator "
        "fixture's LocalSimulator (seed, slots, txs_per_slot, liveness, ...)")


@pytest.fixture
def backtest_simulator(request: pytest.FixtureRequest) -> Iterator[LocalSimulator]:
    """A local simulator on a free port, closed after the test."""
    marker = request.node.get_closest_marker("backtest_simulator")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with LocalSimulator(**kwargs) as sim:
        yield sim


class SessionFactory:
    """``backtest_session(slot_count=100, ...)`` starts a session; ``.expected(session)``
    is what that session must deliver (its range and subscriptions, from the chain)."""

    def __init__(self, sim: LocalSimulator) -> None:
        self._sim = sim
        self._started: dict[int, tuple[ManagedBacktestSession, Expected]] = {}

    def __call__(self, slot_count: int = 100, *, start_slot: int | None = None,
                 transactions: Iterable[str] | None = None,
                 account_diffs: Iterable[str] | None = None,
                 **options: Any) -> ManagedBacktestSession:
        """Start a session over ``slot_count`` slots from ``start_slot`` (the chain's first
        slot by default), subscribed to ``transactions`` and ``account_diffs`` (every
        address of the chain by default; pass ``()`` for none). Other keywords go to
        :meth:`ManagedBacktestSession.start` (``timing`` and ``policy`` default to the
        simulator's)."""
        sim = self._sim
        first, last = sim.available_range()
        start_at = first if start_slot is None else start_slot
        end = start_at + slot_count - 1
        if not first <= start_at < end <= last:
            raise ValueError(f"slot_count: {slot_count} slots from {start_at} do not fit "
                             f"the chain's range {first}..={last}")
        tx_addresses = sim.addresses if transactions is None else tuple(transactions)
        diff_addresses = sim.addresses if account_diffs is None else tuple(account_diffs)
        options.setdefault("timing", sim.timing)
        options.setdefault("policy", sim.policy)
        session = ManagedBacktestSession.start(
            sim.url, DEFAULT_API_KEY, CreateSession(start_slot=start_at, end_slot=end),
            transactions=tx_addresses, account_diffs=diff_addresses, **options)
        expected = sim.expected(start_at, end, transactions=tx_addresses,
                                account_diffs=diff_addresses)
        self._started[id(session)] = (session, expected)
        return session

    def expected(self, session: ManagedBacktestSession) -> Expected:
        """What ``session`` (started by this factory) must deliver, each item once."""
        return self._started[id(session)][1]

    def shutdown_all(self) -> None:
        for session, _ in self._started.values():
            session.shutdown()


@pytest.fixture
def backtest_session(backtest_leak_check: None, backtest_simulator: LocalSimulator
                     ) -> Iterator[SessionFactory]:
    """A factory of sessions on ``backtest_simulator``; every one is shut down after the
    test, and then nothing of theirs may be left running (``backtest_leak_check``)."""
    factory = SessionFactory(backtest_simulator)
    try:
        yield factory
    finally:
        factory.shutdown_all()


@pytest.fixture
def backtest_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Threads and pykka actors after the test are those before it (within a deadline:
    the ini option ``backtest_leak_deadline``)."""
    wait = float(request.config.getini("backtest_leak_deadline"))
    threads = set(threading.enumerate())
    actors = set(pykka.ActorRegistry.get_all())
    yield
    deadline = time.monotonic() + wait
    while True:
        new_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        new_actors = [a for a in pykka.ActorRegistry.get_all() if a not in actors]
        if not new_threads and not new_actors:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"left behind after {wait:g}s: threads "
                        f"{[t.name for t in new_threads]}, actors {new_actors}")
        time.sleep(LEAK_POLL)  # polling a condition with a deadline, not a settle sleep
