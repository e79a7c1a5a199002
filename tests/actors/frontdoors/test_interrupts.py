"""An interrupted ``next_event`` (Ctrl-C, a signal handler's exception) loses nothing: the
take is withdrawn, or its batch is kept for the next call."""

from __future__ import annotations

import inspect
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pykka
import pytest

from actors import (
    AccountDiff,
    Completed,
    ConnectionChanged,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    SessionInfo,
    Slot,
    Transaction,
)
from actors.frontdoors.consumer import SessionCore
from actors.runtime.timers import Scheduler
from actors.supervision.supervisor import CancelTake, Shutdown, TakeEvents
from protocol import ContinueParams
from protocol.simulator import LocalSimulator
from tests.support.harness import FAST, check_exact, start, wait_for


class Interrupted(Exception):
    """What the test's signal handler raises: stands for Ctrl-C or any handler's error."""


class RunTooLong(Exception):
    pass


def _streams(events: list[ManagedEvent]) -> dict[str, list[ManagedEvent]]:
    """Each stream's events in order, ConnectionChanged left out.

    Within a stream the order is the chain's; how the three streams interleave
    depends on thread timing, and differs between two clean runs too.
    """
    streams: dict[str, list[ManagedEvent]] = {"control": [], "transactions": [],
                                              "account_diffs": []}
    for event in events:
        if isinstance(event, Transaction):
            streams["transactions"].append(event)
        elif isinstance(event, AccountDiff):
            streams["account_diffs"].append(event)
        elif not isinstance(event, ConnectionChanged):
            streams["control"].append(event)
    return streams


def _run(session: ManagedBacktestSession, tx: list[str], diffs: list[str],
         on_wait: Callable[[], None] | None = None) -> list[ManagedEvent]:
    """Subscribe both streams and drive to Completed with ``next_event(timeout=None)``."""
    session.subscribe_transactions(tx)
    session.subscribe_account_diffs(diffs)
    events: list[ManagedEvent] = []
    while True:
        if on_wait is not None:
            on_wait()
        try:
            event = session.next_event(timeout=None)
        except Interrupted:
            continue
        events.append(event)
        if isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=1), timeout=10)
        elif isinstance(event, Completed):
            return events


_NEXT_EVENT = ManagedBacktestSession.next_event.__code__


_FUTURE_GET = pykka.ThreadingFuture.get.__code__


_CONDITION_WAIT = threading.Condition.wait.__code__


def _awaited_future(frame: FrameType | None) -> pykka.ThreadingFuture[Any] | None:
    """The future a ``next_event`` call is blocked on, if the main thread is in one."""
    future = None
    while frame is not None:
        if frame.f_code is _FUTURE_GET and future is None:
            future = frame.f_locals.get("self")
        if frame.f_code is _NEXT_EVENT:
            return future
        frame = frame.f_back
    return None


def _is_set(future: pykka.ThreadingFuture[Any]) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:  # noqa: BLE001 - completed with an error: set all the same
        return True
    return True


@pytest.mark.backtest_simulator(seed=23, slots=300)
@pytest.mark.timeout(90, method="thread")  # the test owns SIGALRM (pytest-timeout's default)
@pytest.mark.parametrize("when", ["waiting", "already_set"])
def test_interrupted_next_event_loses_no_event(sim: LocalSimulator, when: str) -> None:
    """A signal handler raising inside ``next_event`` 10+ times changes no event.

    ``waiting``: the interrupt lands while the call waits for its batch.
    ``already_set``: the handler first lets the supervisor fill the batch, then raises:
    the interrupt lands when the future is already set.
    """
    first, _ = sim.available_range()
    end = first + 250
    tx, diffs = list(sim.addresses[:3]), list(sim.addresses[2:5])
    clean_session = start(sim, first, end)
    try:
        clean = _run(clean_session, tx, diffs)
    finally:
        clean_session.shutdown()

    rng = random.Random(7)
    state = {"armed": False, "interrupts": 0, "in_handler": False}
    deadline = time.monotonic() + 30

    def handler(_signum: int, frame: FrameType | None) -> None:
        if state["in_handler"]:
            return  # never nest: the outer call may hold the future's lock
        state["in_handler"] = True
        try:
            if time.monotonic() > deadline:
                raise RunTooLong("the interrupted run did not complete within 30s")
            if not state["armed"]:
                return
            future = _awaited_future(frame)
            if future is None:
                return  # not blocked in next_event: an interrupt there is not this test's
            if when == "already_set":
                # Only while Condition.wait has released the future's lock: then the
                # supervisor can complete the future while this handler runs.
                if frame is None or frame.f_code is not _CONDITION_WAIT:
                    return
                settle = time.monotonic() + 0.5
                while not _is_set(future) and time.monotonic() < settle:
                    time.sleep(0.0005)
                if not _is_set(future):
                    return
            state["armed"] = False
            state["interrupts"] += 1
            raise Interrupted
        finally:
            state["in_handler"] = False

    def arm() -> None:
        state["armed"] = True
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0002, 0.002), 0.001)

    previous = signal.signal(signal.SIGALRM, handler)
    session = start(sim, first, end)
    try:
        interrupted = _run(session, tx, diffs, on_wait=arm)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        session.shutdown()
    assert state["interrupts"] >= 10
    clean_streams, interrupted_streams = _streams(clean), _streams(interrupted)
    assert all(clean_streams.values())
    for name, expected_events in clean_streams.items():
        assert interrupted_streams[name] == expected_events, name
    check_exact(interrupted, sim.expected(first, end, transactions=tx, account_diffs=diffs))


class _Push:
    def __init__(self, events: list[ManagedEvent]) -> None:
        self.events = events


class _FakeSupervisor(pykka.ThreadingActor):
    """Answers ``TakeEvents``/``CancelTake``/``Shutdown`` as the supervisor does.

    Lets a test decide exactly when a take is filled and when the facade is
    interrupted, which real traffic cannot. ``on_cancel`` runs on each
    ``CancelTake`` before it is answered.
    """

    use_daemon_thread = True

    def __init__(self, on_cancel: Callable[[int], None] = lambda n: None) -> None:
        super().__init__()
        self.queued: list[ManagedEvent] = []
        self.takers: list[TakeEvents] = []
        self.cancels = 0
        self._on_cancel = on_cancel

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TakeEvents):
            self.takers.append(message)
        elif isinstance(message, _Push):
            self.queued.extend(message.events)
        elif isinstance(message, CancelTake):
            self.cancels += 1
            self._on_cancel(self.cancels)
            for taker in self.takers:
                if taker.reply is message.reply:
                    self.takers.remove(taker)
                    return True
            return False
        elif isinstance(message, Shutdown):
            message.reply.set([])
        elif message == "state":
            return len(self.takers), self.cancels
        while self.takers and self.queued:
            taker = self.takers.pop(0)
            taker.reply.set(self.queued[:taker.limit])
            del self.queued[:taker.limit]
        return None


class First(Exception):
    pass


class Second(Exception):
    pass


def _main_thread_waits() -> bool:
    """The main thread is blocked in Condition.wait (its future's lock is free)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return frame is not None and frame.f_code is _CONDITION_WAIT


@contextmanager
def _fake_session(on_cancel: Callable[[int], None] = lambda n: None
                  ) -> Iterator[tuple[ManagedBacktestSession, pykka.ActorRef[Any]]]:
    fake = _FakeSupervisor.start(on_cancel)
    session = ManagedBacktestSession(fake, Scheduler(), SessionInfo("s", "http://h/x"), FAST)
    try:
        yield session, fake
    finally:
        session.shutdown()


@pytest.mark.timeout(30, method="thread")
def test_interrupt_while_waiting_withdraws_the_take() -> None:
    """Nothing was in the take: it is withdrawn, and the next take gets the events."""
    helper_done = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise First

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with _fake_session() as (session, fake):
            def interrupt() -> None:
                wait_for(lambda: fake.ask("state")[0] == 1 and _main_thread_waits(), 5,
                         "the facade waiting on its take")
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                helper_done.set()

            threading.Thread(target=interrupt, daemon=True).start()
            with pytest.raises(First):
                session.next_event(timeout=None)
            assert helper_done.wait(5)
            assert fake.ask("state") == (0, 1)  # withdrawn: no take left to swallow events
            events = [Slot(1), Slot(2)]
            fake.tell(_Push(events))
            assert [session.next_event(timeout=5), session.next_event(timeout=5)] == events
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.timeout(30, method="thread")
def test_second_interrupt_during_the_withdrawal_keeps_the_filled_batch() -> None:
    """The take is filled while the first interrupt is handled, and a second
    interrupt lands while the facade withdraws it: the batch is kept, the first re-raised."""
    main = threading.main_thread().ident or 0
    entered, filled = threading.Event(), threading.Event()
    count = [0]

    def handler(_signum: int, _frame: FrameType | None) -> None:
        count[0] += 1
        if count[0] == 1:
            entered.set()
            assert filled.wait(5)  # the take is filled while this handler runs
            raise First
        raise Second

    def on_cancel(n: int) -> None:
        if n == 1:  # the facade is blocked in ask(CancelTake): interrupt it again
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with _fake_session(on_cancel) as (session, fake):
            events = [Slot(1), Slot(2), Slot(3)]

            def interrupt_then_fill() -> None:
                wait_for(lambda: fake.ask("state")[0] == 1 and _main_thread_waits(), 5,
                         "the facade waiting on its take")
                signal.pthread_kill(main, signal.SIGUSR1)
                assert entered.wait(5)
                fake.tell(_Push(events))
                wait_for(lambda: fake.ask("state")[0] == 0, 5, "the take filled")
                filled.set()

            threading.Thread(target=interrupt_then_fill, daemon=True).start()
            with pytest.raises(First):
                session.next_event(timeout=None)
            assert count[0] == 2
            assert fake.ask("state") == (0, 2)  # asked twice, nothing left registered
            assert [session.next_event(timeout=0) for _ in events] == events
    finally:
        signal.signal(signal.SIGUSR1, previous)


_ACQUIRE = SessionCore.acquire_take.__code__
_ACQUIRE_LINE = next(n for n, line in enumerate(inspect.getsourcelines(SessionCore.acquire_take)[0],
                                                 _ACQUIRE.co_firstlineno)
                     if "take_lock.acquire(" in line)


def _at_take_lock(thread: threading.Thread) -> bool:
    """``thread`` is blocked taking the take lock."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is _ACQUIRE and frame.f_lineno == _ACQUIRE_LINE:
            return True
        frame = frame.f_back
    return False


def _consume_until_closed(session: ManagedBacktestSession, got: list[ManagedEvent],
                          timeout: float | None = None) -> None:
    while True:
        try:
            got.append(session.next_event(timeout))  # None: as long as the session lives
        except TimeoutError:
            continue
        except ManagedSessionError:
            return


@pytest.mark.timeout(30, method="thread")
def test_an_interrupt_as_the_take_lock_is_taken_leaves_it_free(sim: LocalSimulator) -> None:
    """Ctrl-C landing just as the main thread gets the take lock (signal handlers run
    right after a call returns): the lock is released, the other consumer thread
    goes on taking events, and it ends at shutdown."""
    first, _ = sim.available_range()
    session = start(sim, first, first + 20)
    core = session._core  # noqa: SLF001 - the lock the handler looks at
    main = threading.main_thread()

    got: list[ManagedEvent] = []
    # Short waits: it lets the lock go between them (locks are not fair, and a thread
    # waiting for ever holds it as long as no event comes), so main gets it in time.
    other = threading.Thread(target=_consume_until_closed, args=(session, got, 0.1),
                             daemon=True)
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            return
        if core.take_lock._is_owned():  # only once main holds it
            stop.set()
            raise Interrupted
        # Main waits for the lock in slices and ran the handler after one that ended
        # without it: ask again, so it runs right after the acquire that gets it.
        signal.pthread_kill(other.ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        while not isinstance(session.next_event(timeout=5), ReadyForContinue):
            pass
        other.start()  # holds the lock, waiting for a take: nothing more comes yet
        wait_for(lambda: not core.take_lock.acquire(blocking=False) or core.take_lock.release(),
                 5, "the other consumer holding the take lock")

        def interrupt_then_continue() -> None:
            wait_for(lambda: _at_take_lock(main), 5, "the main thread waiting for the lock")
            # To this thread, not to main: main is not woken from its wait and runs the
            # handler at the first check after it has the lock.
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            session.send_continue(ContinueParams(advance_count=5), timeout=5)

        threading.Thread(target=interrupt_then_continue, daemon=True).start()
        with pytest.raises(Interrupted):
            session.next_event(timeout=10)
    finally:
        stop.set()
        time.sleep(0)  # a signal still pending runs the handler (now a no-op) here
        signal.signal(signal.SIGUSR1, previous)
    assert not core.take_lock._is_owned()
    wait_for(lambda: any(isinstance(e, Slot) for e in got), 5, "the other thread taking events")
    session.shutdown()
    other.join(5)
    assert not other.is_alive()


@pytest.mark.timeout(30, method="thread")
def test_a_take_lock_never_released_keeps_no_consumer_past_shutdown(
        sim: LocalSimulator) -> None:
    """Whatever holds the take lock for good (here a thread that never lets it go), a
    consumer waiting for it with no timeout ends when the session is shut down."""
    first, _ = sim.available_range()
    session = start(sim, first, first + 5)
    core = session._core  # noqa: SLF001
    held, end = threading.Event(), threading.Event()

    def hold() -> None:  # alive while it holds it: a dead thread's ident can be reused
        with core.take_lock:
            held.set()
            end.wait(20)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    got: list[ManagedEvent] = []
    waiter = threading.Thread(target=_consume_until_closed, args=(session, got), daemon=True)
    waiter.start()
    wait_for(lambda: _at_take_lock(waiter), 5, "the consumer waiting for the lock")
    began = time.monotonic()
    session.shutdown()
    waiter.join(5)
    assert not waiter.is_alive()
    assert time.monotonic() - began < 1 + FAST.graceful_close
    assert got == []
    end.set()
    holder.join(5)
