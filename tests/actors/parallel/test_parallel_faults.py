"""Parallel sessions under transport faults (the TCP fault proxy): resets and blackholes
of the shared control socket and of the sub-sessions' PubSub links; every sub-session
exact, 0 double advances counted at the server."""

from __future__ import annotations

import threading

import pytest

from actors import ManagedEvent, ManagedParallelSession, ParallelSubSession, ReadyForContinue
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from protocol.simulator.proxy import FaultProxy
from tests.support.harness import FAST, FAULT_POLICY, FAULT_SERVER, check_exact, no_leaks, wait_for

SPAN = 600


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_shared_control_and_pubsub_faults_leave_every_sub_session_exact(seed: int) -> None:
    with LocalSimulator(seed=seed, slots=SPAN + 50, liveness=FAULT_SERVER,
                        parallel_split=150) as sim, \
            FaultProxy("127.0.0.1", sim.port) as proxy:
        first, _ = sim.available_range()
        end = first + SPAN - 1
        addresses = list(sim.addresses[:3])
        events: dict[str, list[ManagedEvent]] = {}
        errors: list[BaseException] = []
        blocks = [0]
        lock = threading.Lock()

        def drive(sub: ParallelSubSession) -> None:
            mine = events[sub.info.session_id] = []
            try:
                for event in sub:
                    mine.append(event)
                    if isinstance(event, ReadyForContinue):
                        with lock:
                            blocks[0] += 1
                        sub.send_continue(ContinueParams(advance_count=2), timeout=60)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        with no_leaks(FAST.graceful_close + 2):
            with ManagedParallelSession.start(proxy.url_for(sim.url), DEFAULT_API_KEY,
                                              CreateSession(first, end), timing=FAST,
                                              policy=FAULT_POLICY) as parallel:
                subs = parallel.take_sub_sessions()
                for sub in subs:
                    sub.subscribe_transactions(addresses)
                    sub.subscribe_account_diffs(addresses)
                threads = [threading.Thread(target=drive, args=(sub,)) for sub in subs]
                for thread in threads:
                    thread.start()
                faults = [lambda: proxy.reset("control"), lambda: proxy.reset("pubsub"),
                          lambda: proxy.blackhole("control"), lambda: proxy.reset("all"),
                          lambda: proxy.blackhole("pubsub")]
                for number, fault in enumerate(faults, 1):
                    # Spread over the run: after a share of the continues, every link Up.
                    wait_for(lambda n=number: blocks[0] >= n * 25 or not any(
                        t.is_alive() for t in threads), 60, f"progress before fault {number}")
                    if any(t.is_alive() for t in threads):
                        fault()
                for thread in threads:
                    thread.join(timeout=90)
                assert not any(t.is_alive() for t in threads), "a sub-session hung"
                hub = parallel.stats()
                ids = [s.info.session_id for s in subs]
                doubles = [s.stats()["double_advances"] for s in subs]
        assert not errors, errors
        assert hub["link_restarts"] >= 2
        for sub, session_id in zip(subs, ids, strict=True):
            low, high = sub.range
            expected = sim.expected(low, high, transactions=addresses, account_diffs=addresses)
            check_exact(events[session_id], expected)
            server = sim.session_stats(session_id)
            assert server.blocks_executed == len(expected.slots) - 1  # never twice
        assert doubles == [0] * len(subs)
