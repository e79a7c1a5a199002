"""Review of 1a5aa52 / 6d9b55f: the closed inbox and the upgrade's header check.

Real sockets on 127.0.0.1 only; every wait has a deadline."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any

import pykka
import pytest

from actors import ManagedBacktestSession, ManagedSessionError, SessionListener
from actors.runtime.connection import ConnectFailed, Opened
from actors.runtime.failsafe import FailSafeActor
from actors.runtime.inbox import SimpleInboxActor, _Inbox
from protocol import ContinueParams
from protocol.simulator import LocalSimulator
from tests.support.harness import Recorder, no_leaks, start, start_connection, wait_for
from tests.support.scripted import RawUpgradeServer

# SystemExit raised on purpose inside actor threads ends those threads: expected here.
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]

KEY = "secret-key-123"


# --- inbox -------------------------------------------------------------------------


class _Gate(SimpleInboxActor):
    use_daemon_thread = True

    def __init__(self, release: threading.Event | None = None) -> None:
        super().__init__()
        self._release = release

    def on_receive(self, message: Any) -> Any:
        if message == "hold" and self._release is not None:
            self._release.wait(10)
        return message


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


class _FailSafe(FailSafeActor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("handler bug")
        return message

    def on_internal_error(self, exc: Exception) -> None:
        raise SystemExit("failing failed with a BaseException")


def test_failsafe_whose_on_internal_error_raises_base_exception_is_not_a_zombie() -> None:
    with no_leaks(3.0):
        ref = _FailSafe.start()
        ref.tell("boom")
        ask_f = ref.ask("after", block=False)
        with pytest.raises(pykka.ActorDeadError):
            ask_f.get(timeout=3)
        assert not ref.is_alive()
        assert ref not in pykka.ActorRegistry.get_all()


# --- the upgrade's headers -------------------------------------------------------------


def _accept_key(key: str) -> str:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def _switch(request: str) -> bytes:
    key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
               if line.lower().startswith("sec-websocket-key:"))
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {_accept_key(key)}\r\n\r\n"
            ).encode()


def _headers_of(request: str) -> list[str]:
    return request.split("\r\n")[1:]


def test_the_key_goes_out_once_and_an_empty_header_list_still_upgrades() -> None:
    server = RawUpgradeServer(_switch)
    owner = Recorder.start()
    try:
        with no_leaks(3.0):
            for headers in ({"X-API-Key": KEY}, None, {}):
                conn = start_connection(f"ws://127.0.0.1:{server.port}/", owner,
                                        connect_timeout=5.0, headers=headers)
                wait_for(lambda o=owner: Opened() in o.ask("get"), 5, "opened")
                request = server.requests[-1]
                lines = _headers_of(request)
                assert sum(line.lower().startswith("sec-websocket-key:")
                           for line in lines) == 1
                assert lines.count(f"X-API-Key: {KEY}") == (1 if headers else 0)
                conn.abort()
                assert conn.join(3.0)
                owner.stop()
                owner = Recorder.start()
    finally:
        owner.stop()
        server.close()


def test_a_redirect_does_not_carry_the_api_key_to_another_host() -> None:
    """websocket-client follows 3xx (redirect_limit=3 by default) and iterates the
    same header list again for the new target: the X-API-Key goes to whatever host
    the Location names (here localhost:<other port>; equally a ws:// downgrade of a
    wss:// URL, in clear text)."""
    other = RawUpgradeServer(_switch)
    first = RawUpgradeServer(lambda request: (
        f"HTTP/1.1 302 Found\r\nLocation: ws://localhost:{other.port}/elsewhere\r\n"
        f"Content-Length: 0\r\n\r\n").encode())
    owner = Recorder.start()
    try:
        conn = start_connection(f"ws://127.0.0.1:{first.port}/backtest", owner,
                                connect_timeout=5.0, headers={"X-API-Key": KEY})
        wait_for(lambda: owner.ask("get"), 5, "an outcome")
        conn.abort()
        conn.join(3.0)
        assert first.requests and f"X-API-Key: {KEY}" in _headers_of(first.requests[0])
        outcome = owner.ask("get")
        leaked = [r for r in other.requests if KEY in r]
        assert leaked == [], f"the key reached the redirect target; outcome {outcome}"
        # Not followed, and not taken for an upgrade either: a failed connect, with
        # the status, which the link's policy then handles like any other answer.
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectFailed), outcome
        assert outcome[0].status == 302, outcome
        assert "HTTP 302" in outcome[0].reason and "not followed" in outcome[0].reason
    finally:
        owner.stop()
        first.close()
        other.close()


def test_an_abort_during_the_redirect_hop_is_honoured() -> None:
    """The abort comes while the first hop's answer is awaited; the redirect's
    second upgrade is not written."""
    proceed = threading.Event()
    other = RawUpgradeServer(_switch)

    def slow_redirect(request: str) -> bytes:
        proceed.wait(5)
        return (f"HTTP/1.1 301 Moved\r\nLocation: ws://127.0.0.1:{other.port}/\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    first = RawUpgradeServer(slow_redirect)
    owner = Recorder.start()
    try:
        conn = start_connection(f"ws://127.0.0.1:{first.port}/", owner,
                                connect_timeout=5.0, headers={"X-API-Key": KEY})
        wait_for(lambda: first.requests, 5, "the first upgrade")
        conn.abort()
        proceed.set()
        assert conn.join(3.0)
        seen = owner.ask("get")
        assert len(seen) == 1 and isinstance(seen[0], ConnectFailed), seen
        assert other.requests == []
    finally:
        owner.stop()
        first.close()
        other.close()


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


# --- an application actor that crashes with a BaseException: pykka's stop_all ----------

class _Exiting(SessionListener):
    def on_event(self, event: Any) -> None:
        if type(event).__name__ == "ReadyForContinue":
            raise SystemExit("strategy calls sys.exit()")


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


def test_a_request_told_into_a_stopped_supervisor_is_answered_not_lost() -> None:
    """The CI run's failure of the test above: ``stop_all`` stopped the other session's
    supervisor while its consumer's next TakeEvents (a tell carrying its own reply)
    was on its way; pykka drops a tell left at an actor's end, and the consumer
    waited out its whole timeout (for ever with ``timeout=None``). A tell that
    reaches the inbox at or after the end (pykka's alive check passed just before)
    is now answered as a stopped session answers."""
    from pykka._envelope import Envelope

    from actors.requests import TakeEvents

    with LocalSimulator(seed=44, slots=50) as sim, no_leaks(5.0):
        first, _ = sim.available_range()
        session = start(sim, first, first + 10)
        supervisor = session.supervisor
        session.shutdown()
        assert not supervisor.is_alive()
        reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        supervisor.actor_inbox.put(Envelope(TakeEvents(reply, 10)))
        with pytest.raises(ManagedSessionError) as failed:
            reply.get(timeout=2)
        assert failed.value.kind == "closed"
