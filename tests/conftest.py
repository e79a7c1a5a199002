"""Fixtures every test folder shares: simulators, fast timing, and the leak check.

The local simulator is the test-harness kit's own fixture (``backtest_simulator``
in :mod:`actors.testing.pytest_plugin`, the one users get): ``sim`` is that
fixture under a short name, so the project tests what it ships. A module or a
test picks the simulator's arguments with
``@pytest.mark.backtest_simulator(seed=..., slots=..., liveness=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest

from protocol import ReconnectPolicy, Timing
from protocol.simulator import LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import FAST, FAULT_SERVER, QUICK_RETRY, no_leaks, wait_for

LEAK_GRACE = 5.0  # seconds for threads, actors and sockets to end after a test


@pytest.fixture
def sim(backtest_simulator: LocalSimulator) -> LocalSimulator:
    """The local simulator (``@pytest.mark.backtest_simulator(...)`` sets its arguments)."""
    return backtest_simulator


@pytest.fixture
def net(request: pytest.FixtureRequest) -> Iterator[tuple[LocalSimulator, FaultProxy]]:
    """A simulator that finds dead peers fast (FAULT_SERVER) behind a TCP fault proxy:
    faults break the transport, the server learns of them as a real one would."""
    marker = request.node.get_closest_marker("backtest_simulator")
    kwargs = {"liveness": FAULT_SERVER, **(marker.kwargs if marker is not None else {})}
    with LocalSimulator(**kwargs) as simulator, \
            FaultProxy("127.0.0.1", simulator.port) as proxy:
        yield simulator, proxy


@pytest.fixture(scope="module")
def standalone(request: pytest.FixtureRequest) -> Iterator[str]:
    """A simulator in a process of its own (it outlives a killed client), one per module;
    its URL. The module's ``STANDALONE`` dict gives its arguments (seed, slots)."""
    from protocol.simulator.process import simulator_process

    with simulator_process(**getattr(request.module, "STANDALONE", {})) as url:
        yield url


@pytest.fixture
def fast_timing() -> Timing:
    """Keepalive every 50 ms, dead after 250 ms: faults recover in a fraction of a second."""
    return FAST


@pytest.fixture
def quick_retry() -> ReconnectPolicy:
    """Restarts 10 ms apart (doubling to 100 ms), 20 attempts; seeded jitter."""
    return QUICK_RETRY


@pytest.fixture
def leak_check() -> Iterator[None]:
    """Threads, pykka actors and open file descriptors are back to their baseline after
    the test (waited for with a deadline, never a sleep)."""
    process = psutil.Process(os.getpid())
    fds_before = process.num_fds()
    with no_leaks(LEAK_GRACE):
        yield
    wait_for(lambda: process.num_fds() <= fds_before, LEAK_GRACE,
             f"open file descriptors back to {fds_before} (now {process.num_fds()})")
