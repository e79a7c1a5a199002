"""Application actors as listeners: a listener drives a session from its first event, and
one that raises, is stopped or exits never hangs the session or leaks it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from actors import (
    Completed,
    ContinueRefused,
    ListenerAttached,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    SessionListener,
)
from protocol import (
    ContinueParams,
    CreateSession,
)
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import FAST, QUICK_RETRY, check_exact, no_leaks, start, wait_for


class _Raising(SessionListener):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.n = 0

    def on_event(self, event: Any) -> None:
        self.n += 1
        if self.n > self.after:
            raise RuntimeError("strategy bug")
        if type(event).__name__ == "ReadyForContinue":
            self.send_continue(ContinueParams(advance_count=1))


@pytest.mark.parametrize("after", [0, 5])
def test_a_listener_that_raises_or_is_stopped_does_not_hang_the_session(after: int) -> None:
    with LocalSimulator(seed=41, slots=200) as sim:
        first, _ = sim.available_range()
        with no_leaks(5.0):
            listener = _Raising.start(after)
            t0 = time.monotonic()
            try:
                session = start(sim, first, first + 30, listener=listener,
                                transactions=list(sim.addresses[:2]))
            except ManagedSessionError as exc:
                # The listener died on a start-up event, before the session was named:
                # start() says so at once (a fast decoder makes this the usual case).
                assert after == 0 and "listener actor is gone" in str(exc), exc
                assert time.monotonic() - t0 < 3.0
                return
            wait_for(lambda: not listener.is_alive(), 5, "the listener to die")
            wait_for(lambda: session.status() == {} or True, 1, "status")
            t0 = time.monotonic()
            session.shutdown()
            assert time.monotonic() - t0 < 3.0


def test_a_listener_stopped_while_the_session_runs() -> None:
    with LocalSimulator(seed=42, slots=200) as sim:
        first, _ = sim.available_range()
        with no_leaks(5.0):
            listener = _Raising.start(10**9)
            session = start(sim, first, first + 40, listener=listener,
                            transactions=list(sim.addresses[:2]))
            listener.stop(timeout=2)
            t0 = time.monotonic()
            session.shutdown()
            assert time.monotonic() - t0 < 3.0


def test_a_rejected_create_with_a_listener_raises_the_session_error_and_leaks_nothing(
) -> None:
    from actors import ManagedSessionError
    with LocalSimulator(seed=43, slots=50) as sim:
        first, last = sim.available_range()
        listener = SessionListener.start()
        try:
            with no_leaks(5.0):
                with pytest.raises(ManagedSessionError):
                    start(sim, last + 1000, last + 1010, listener=listener)
        finally:
            listener.stop()


class _Exiting(SessionListener):
    def on_event(self, event: Any) -> None:
        if type(event).__name__ == "ReadyForContinue":
            raise SystemExit("strategy calls sys.exit()")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_listener_exiting_with_a_base_exception_stops_everything_boundedly() -> None:
    with LocalSimulator(seed=43, slots=200) as sim:
        first, _ = sim.available_range()
        with no_leaks(8.0):
            other = start(sim, first, first + 30, transactions=list(sim.addresses[:2]))
            outcome: list[Any] = []

            def consume() -> None:
                try:
                    while True:
                        event = other.next_event(timeout=20)
                        if type(event).__name__ == "ReadyForContinue":
                            other.send_continue(ContinueParams(advance_count=1), timeout=20)
                except BaseException as exc:  # noqa: BLE001
                    outcome.append(exc)

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            listener = _Exiting.start()
            session: ManagedBacktestSession = start(sim, first, first + 30, listener=listener,
                                                    transactions=list(sim.addresses[:2]))
            wait_for(lambda: not listener.is_alive(), 5, "the listener to die")
            wait_for(lambda: outcome, 8, "the other session's consumer to be answered")
            assert isinstance(outcome[0], ManagedSessionError), outcome
            t0 = time.monotonic()
            session.shutdown()
            other.shutdown()
            assert time.monotonic() - t0 < 4.0
            consumer.join(5)


class DrivingListener(SessionListener):
    """Drives the session from the first event, with no ref handed over by hand."""

    def __init__(self, done: pykka.ThreadingFuture[list[Any]], advance: int) -> None:
        super().__init__()
        self.done, self.advance = done, advance
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)  # every message, in the order it came
        return super().on_receive(message)

    def on_event(self, event: ManagedEvent) -> None:
        if isinstance(event, ReadyForContinue):
            self.send_continue(ContinueParams(advance_count=self.advance))
        elif isinstance(event, Completed):
            self.done.set(self.seen)


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_a_session_listener_drives_from_the_first_event(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 100
    with no_leaks(FAST.graceful_close + 1):
        done: pykka.ThreadingFuture[list[Any]] = pykka.ThreadingFuture()
        listener = DrivingListener.start(done, 6)
        # Subscribed with the create: the listener may answer the first Ready at once,
        # and the first continue still waits for the subscription.
        session = ManagedBacktestSession.start(
            sim.url, DEFAULT_API_KEY, CreateSession(first, end), timing=FAST,
            policy=QUICK_RETRY, listener=listener, transactions=list(sim.addresses[:2]))
        try:
            seen = done.get(timeout=30)
        finally:
            session.shutdown()
            listener.stop()
    assert isinstance(seen[0], ListenerAttached)
    assert seen[0].supervisor == session.supervisor
    events = seen[1:]
    assert not any(isinstance(e, ListenerAttached | ContinueRefused) for e in events)
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))
