"""The library actors' inbox (SimpleQueue, closed at the end): every ask and every tell
that carries a reply is answered, even when it races the actor's stop."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from actors.runtime.inbox import SimpleInboxActor, _Inbox
from tests.support.harness import no_leaks, wait_for


class _Stopper(SimpleInboxActor):
    def on_receive(self, message: Any) -> Any:
        if message == "stop":
            self.stop()
        return message


def test_ask_to_a_stopping_simple_inbox_actor_always_answers() -> None:
    with no_leaks(5.0):
        hung = 0
        for _ in range(200):
            ref = _Stopper.start()
            futures: list[Any] = []
            go = threading.Barrier(4)

            def asker(ref: Any = ref, futures: list[Any] = futures,
                      go: threading.Barrier = go) -> None:
                go.wait(2)
                for i in range(50):
                    futures.append(ref.ask(i, block=False))

            threads = [threading.Thread(target=asker) for _ in range(3)]
            for t in threads:
                t.start()
            go.wait(2)
            ref.tell("stop")
            for t in threads:
                t.join(5)
            for f in futures:
                try:
                    f.get(timeout=2)
                except pykka.ActorDeadError:
                    pass
                except pykka.Timeout:
                    hung += 1
        assert hung == 0




class _Gate(SimpleInboxActor):
    use_daemon_thread = True

    def __init__(self, release: threading.Event | None = None) -> None:
        super().__init__()
        self._release = release

    def on_receive(self, message: Any) -> Any:
        if message == "hold" and self._release is not None:
            self._release.wait(10)
        return message


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_asks_tells_and_stops_racing_the_end_are_each_answered_exactly_once() -> None:
    """Many threads ask, tell and stop while the actor ends; every future is answered,
    no put raises anything but ActorDeadError (a library thread would die)."""
    errors: list[BaseException] = []
    with no_leaks(5.0):
        for _round in range(300):
            ref = _Gate.start()
            futures: list[Any] = []
            lock = threading.Lock()
            barrier = threading.Barrier(5)

            def hammer(kind: int, ref: Any = ref, barrier: Any = barrier) -> None:
                barrier.wait(5)
                for i in range(40):
                    try:
                        if kind == 0:
                            f = ref.ask(i, block=False)
                        elif kind == 1:
                            f = ref.stop(block=False)
                        else:
                            ref.tell(i)
                            continue
                    except pykka.ActorDeadError:
                        continue
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)
                        return
                    with lock:  # noqa: B023
                        futures.append(f)  # noqa: B023

            threads = [threading.Thread(target=hammer, args=(k % 3,)) for k in range(4)]
            for t in threads:
                t.start()
            barrier.wait(5)
            ref.stop(block=False)
            for t in threads:
                t.join(10)
            for f in futures:
                try:
                    f.get(timeout=5)
                except pykka.ActorDeadError:
                    pass
            inbox = ref.actor_inbox
            assert isinstance(inbox, _Inbox)
            wait_for(lambda inbox=inbox: inbox._ended is not None, 5, "closed")
            assert inbox.empty()
    assert errors == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_stop_and_stop_all_on_an_already_stopped_actor() -> None:
    with no_leaks(3.0):
        ref = _Gate.start()
        assert ref.stop(timeout=5) is True
        assert ref.stop(timeout=5) is False
        pykka.ActorRegistry.stop_all(timeout=5)
        with pytest.raises(pykka.ActorDeadError):
            ref.ask("x", timeout=5)
        # A put straight into the closed inbox (the race, made deterministic):
        # a stop request is answered None, an ask ActorDeadError, a tell dropped.
        from pykka._envelope import Envelope
        from pykka.messages import _ActorStop
        stop_f = pykka.ThreadingFuture()
        ask_f = pykka.ThreadingFuture()
        ref.actor_inbox.put(Envelope(_ActorStop(), reply_to=stop_f))
        ref.actor_inbox.put(Envelope("late", reply_to=ask_f))
        ref.actor_inbox.put(Envelope("tell"))
        assert stop_f.get(timeout=1) is None
        with pytest.raises(pykka.ActorDeadError):
            ask_f.get(timeout=1)
        assert ref.actor_inbox.empty()


class _StopRaisesBase(SimpleInboxActor):
    """on_stop raises a BaseException (sys.exit() in an application's on_stop)."""

    use_daemon_thread = True

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self._release = release

    def on_receive(self, message: Any) -> Any:
        if message == "hold":
            self._release.wait(10)
        return message

    def on_stop(self) -> None:
        raise SystemExit("application on_stop exits")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_ask_queued_behind_a_stop_is_answered_even_if_on_stop_raises_base() -> None:
    """pykka's BaseException path calls _stop() again (on_stop raises again) and the
    exception leaves _actor_loop_running: its teardown never runs. The inbox is
    closed anyway, and what was queued behind the stop is answered."""
    with no_leaks(3.0):
        release = threading.Event()
        ref = _StopRaisesBase.start(release)
        ref.tell("hold")
        ref.stop(block=False)  # in flight when on_stop raises: pykka never answers it
        ask_f = ref.ask("queued after the stop", block=False)
        release.set()
        with pytest.raises(pykka.ActorDeadError):
            ask_f.get(timeout=3)
        wait_for(lambda: ref.actor_inbox._ended is not None, 3, "the inbox closed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_put_never_raises_into_the_telling_thread() -> None:
    """A tell from a library thread (timer, reactor) into an inbox being closed."""
    for _ in range(200):
        inbox = _Inbox()
        futures = [pykka.ThreadingFuture() for _ in range(50)]
        from pykka._envelope import Envelope
        errors: list[BaseException] = []

        def putter(fs: list[Any], inbox: _Inbox = inbox, errors: list[Any] = errors) -> None:
            try:
                for f in fs:
                    inbox.put(Envelope("m", reply_to=f))
                    inbox.put(Envelope("tell"))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        ts = [threading.Thread(target=putter, args=(futures[i::3],)) for i in range(3)]
        for t in ts:
            t.start()
        inbox.close("x")
        for t in ts:
            t.join(5)
        assert errors == []
        for f in futures:
            with pytest.raises(pykka.ActorDeadError):
                f.get(timeout=1)
        assert inbox.empty()
