"""The shared reader: one thread that reads every connection of the process.

A sweep runs hundreds of sessions; a reader thread per connection cost three
threads per session. So one thread waits on all sockets with :mod:`selectors`,
and for each ready connection calls :meth:`Connection.serve
<actors.runtime.connection.Connection.serve>`, which reads what the socket has
(one ``recv`` of up to 64 KiB per turn, so no connection starves another),
decodes the frames and tells the connection's actor. It never blocks: sockets
are non-blocking, and a connection out of credits is simply not selected.

It lives while it has connections: the first connection starts it and it ends
with its last one, so a process without sessions has no reader thread. Other
threads hand it work by :meth:`SharedReader.poke` (a queue and a wake-up byte on
a socket pair), never by touching the selector.
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection


class SharedReader:
    """The shared reader thread: every open connection's socket in one selector.

    One lives while it has connections: the first connection starts it, and
    it ends with its last one, so a process without sessions has no reader
    thread. Other threads hand it work by :meth:`poke` (a queue and a wake-up
    byte on a socket pair), never by touching the selector.
    """

    _lock = threading.Lock()
    _current: SharedReader | None = None

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pokes: collections.deque[Connection] = collections.deque()
        self._woken = False  # a wake-up byte is in flight (guarded by _lock)
        self._connections = 0  # guarded by SharedReader._lock
        self._stopping = False
        self._ready: dict[Connection, None] = {}  # ordered set (reader only)
        self._thread = threading.Thread(target=self._run, name="backtest-reader", daemon=True)

    @classmethod
    def acquire(cls) -> SharedReader:
        """The running reader with one more connection counted (one is started if none)."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
                cls._current._thread.start()
            reader = cls._current
            reader._connections += 1
            return reader

    @classmethod
    def running(cls) -> int:
        """How many reader threads this process runs now (0 or 1): for tests and the bench."""
        with cls._lock:
            return 0 if cls._current is None else 1

    def add(self, conn: Connection) -> None:
        self.poke(conn)

    def poke(self, conn: Connection) -> None:
        """Have the reader look at ``conn`` soon (credits back, a write waiting, close)."""
        self._pokes.append(conn)
        with SharedReader._lock:
            if self._woken or self._stopping:
                return
            self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed (stopping)

    def interest(self, conn: Connection, events: int) -> None:
        """Reader thread: what the selector waits for on ``conn``'s socket (0: nothing)."""
        if events == conn.selector_events:
            return
        sock = conn.sock
        if sock is None:
            return
        if conn.selector_events and events:
            self._selector.modify(sock, events, conn)
        elif events:
            self._selector.register(sock, events, conn)
        else:
            self._selector.unregister(sock)
        conn.selector_events = events

    def drop(self, conn: Connection) -> None:
        """Reader thread: forget ``conn``, close its socket; the last one ends the reader."""
        self._ready.pop(conn, None)
        if conn.finished.is_set():
            return
        if conn.selector_events and conn.sock is not None:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.selector_events = 0
        conn.close_socket()
        with SharedReader._lock:
            self._connections -= 1
            if self._connections == 0:
                self._stopping = True
                if SharedReader._current is self:
                    SharedReader._current = None  # the next connection starts a fresh one
        # Set last: whoever waits for it then sees this reader stopping, and joins it.
        conn.finished.set()

    def join_if_stopping(self, timeout: float) -> None:
        with SharedReader._lock:
            stopping = self._stopping
        if stopping and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                for key, _ in self._selector.select(0 if self._ready else None):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._ready[key.data] = None
                while self._pokes:
                    self._ready[self._pokes.popleft()] = None
                for conn in list(self._ready):
                    del self._ready[conn]
                    if conn.finished.is_set():
                        continue
                    try:
                        more = conn.serve(self)
                    except Exception as exc:  # noqa: BLE001 - one connection, not all
                        conn.reader_failed(exc)
                        self.drop(conn)
                        continue
                    if more:
                        self._ready[conn] = None
                with SharedReader._lock:
                    if self._stopping and not self._pokes:
                        return
        finally:
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wake(self) -> None:
        # Read the byte first, then clear the flag: a poke that comes after the
        # clear writes a new byte, so the next select() wakes for it; one that
        # comes before is already in _pokes, which are taken after this. One recv:
        # the flag lets at most one byte be in flight, so a second call would only
        # raise BlockingIOError (an exception per wake-up, on the reader's thread).
        try:
            self._wake_r.recv(4096)
        except (BlockingIOError, OSError):
            pass
        with SharedReader._lock:
            self._woken = False
