"""A start that gets no session raises "create: control: <why>": the kind once, then the link.

An issue quoted "create: create: control: connect timed out". Every way in is
checked here against a server that accepts TCP and never answers the upgrade
(the connect times out) and against a refused port.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator

import pytest

from actors import (
    AsyncBacktestSession,
    ManagedBacktestSession,
    ManagedSessionError,
    SessionListener,
    spawn_control,
)
from protocol import CreateSession, ReconnectPolicy, Timing

TIMING = Timing(connect=0.3, handshake=0.3, keepalive_interval=0.05, keepalive_deadline=0.25,
                graceful_close=0.5)
POLICY = ReconnectPolicy(initial=0.01, max_delay=0.02, max_attempts=1, jitter=0)
CREATE = CreateSession(1, 2)
# Silent: the connect bound cuts the attempt, unless websocket-client's own socket timeout
# (the same 0.3 s) fires first; which one wins is a race.
WHY = {"silent": r"control: connect (timed out after 0\.3s|failed: WebSocketTimeoutException)",
       "refused": r"control: connect failed: ConnectionRefusedError"}


@pytest.fixture(params=["silent", "refused"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(its URL, what the start must say after "create: ")."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}"
    if request.param == "silent":
        sock.listen(8)  # the kernel completes TCP; nothing ever speaks
    else:
        sock.close()  # nothing listens: refused
    try:
        yield url, WHY[request.param]
    finally:
        sock.close()


def blocking(url: str) -> None:
    ManagedBacktestSession.start(url, "key", CREATE, timing=TIMING, policy=POLICY)


def aio(url: str) -> None:
    async def start() -> None:
        await AsyncBacktestSession.start(url, "key", CREATE, timing=TIMING, policy=POLICY)
    asyncio.run(start())


def listener(url: str) -> None:
    actor = SessionListener.start()
    try:
        ManagedBacktestSession.start(url, "key", CREATE, timing=TIMING, policy=POLICY,
                                     listener=actor)
    finally:
        actor.stop()


def handle(url: str) -> None:
    spawn_control(url, "key", CREATE, timing=TIMING, policy=POLICY)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("start", [blocking, aio, listener, handle])
def test_a_failed_start_names_create_once_then_the_link_and_why(
        server: tuple[str, str], start: Callable[[str], None]) -> None:
    url, why = server
    with pytest.raises(ManagedSessionError) as info:
        start(url)
    error = info.value
    assert error.kind == "create"
    assert re.match(why, error.reason), error.reason
    assert str(error) == f"create: {error.reason}"
    assert str(error).count("create:") == 1, str(error)
