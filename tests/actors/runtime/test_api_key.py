"""The API key goes out once, in the control upgrade only: never to the host a redirect
names, never in a log record or an error message."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading

import pytest

from actors import ManagedBacktestSession, ManagedSessionError
from actors.runtime.connection import ConnectFailed, Opened
from protocol import (
    CreateSession,
)
from protocol.simulator import LocalSimulator
from tests.support.harness import (
    FAST,
    QUICK_RETRY,
    Recorder,
    drive,
    no_leaks,
    start_connection,
    wait_for,
)
from tests.support.scripted import RawUpgradeServer

KEY = "secret-key-123"


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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
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


def test_api_key_never_reaches_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-7f3a9c1e5b"
    wrong = "sk-wrong-0d2b4f6a8c"
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with LocalSimulator(api_key=secret, seed=2, slots=100) as simulator:
        first, _ = simulator.available_range()
        session = ManagedBacktestSession.start(simulator.url, secret,
                                               CreateSession(first, first + 15),
                                               timing=FAST, policy=QUICK_RETRY)
        try:
            session.subscribe_transactions(simulator.addresses[:1])
            simulator.faults.drop("control")
            drive(session)
        finally:
            session.shutdown()
        with pytest.raises(ManagedSessionError) as info:
            ManagedBacktestSession.start(simulator.url, wrong, CreateSession(first, first + 5),
                                         timing=FAST, policy=QUICK_RETRY)
        errors.append(str(info.value))
        errors.append(repr(info.value))
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert len(caplog.records) > 20  # the run did log (debug included)
    for key in (secret, wrong):
        assert key not in text
        assert all(key not in e for e in errors)
