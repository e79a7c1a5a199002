"""A scripted control server: a real WebSocket server on 127.0.0.1 that says exactly
what a test tells it to, for answers the simulator never gives (a ``completed``
before ``sessionCreated``, an error answering a continue, seqIds that go back)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from websockets.sync.server import ServerConnection, serve

Script = Callable[[ServerConnection], None]


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """Serve ``script`` (one call per connection) and yield the control URL.

    On exit every connection's handler thread has ended too, so the next test's
    thread count starts from a clean slate.
    """
    handlers: list[threading.Thread] = []

    def handle(ws: ServerConnection) -> None:
        handlers.append(threading.current_thread())
        _run(script, ws)

    server = serve(handle, "127.0.0.1", 0, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, name="scripted-server",
                              daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/backtest"
    finally:
        server.shutdown()
        thread.join(5)
        for handler in handlers:
            handler.join(5)


def _run(script: Script, ws: ServerConnection) -> None:
    try:
        script(ws)
    except Exception:  # noqa: BLE001 - the client hung up: the script ends with it
        pass


def hold(ws: ServerConnection) -> None:
    """Keep the connection open (answering pings) until the client closes it."""
    for _ in ws:
        pass


def created(session_id: str = "backtest_scripted") -> list[str]:
    return [
        f'{{"method":"sessionCreated","params":{{"session_id":"{session_id}",'
        f'"rpc_endpoint":"/backtest/{session_id}"}}}}',
        '{"method":"slotNotification","params":10}',
        '{"method":"readyForContinue"}',
    ]
