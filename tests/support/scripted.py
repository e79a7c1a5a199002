"""Scripted servers on 127.0.0.1 that say exactly what a test tells them to.

``scripted_server``: a real WebSocket server, for control answers the simulator
never gives (a ``completed`` before ``sessionCreated``, an error answering a
continue, seqIds that go back). ``RawUpgradeServer``: bare TCP, for HTTP upgrade
answers no WebSocket server gives (none at all, a redirect)."""

from __future__ import annotations

import socket
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


class RawUpgradeServer:
    """Records each upgrade request and answers ``answer(request)`` as raw bytes, or
    not at all (``None``: the connection stays open, unanswered). One connection
    at a time; ``conns`` are the accepted sockets, in order."""

    def __init__(self, answer: Callable[[str], bytes | None]) -> None:
        self._answer = answer
        self.requests: list[str] = []
        self.conns: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-upgrade-server",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                continue
            request = data.decode("latin-1")
            self.requests.append(request)
            reply = self._answer(request)
            if reply is not None:
                try:
                    conn.sendall(reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        for conn in self.conns:
            conn.close()
