"""One WebSocket (websocket-client), read by the process's shared reader thread.

A connection connects on a short-lived thread of its own (the whole of TCP +
TLS + upgrade bounded by ``Timing.connect``, see :meth:`Connection.expire_connect`):
websocket-client's connect is blocking, and a connect that hangs must never
hold anybody else's. Once the upgrade is done that thread tells ``Opened``,
hands the socket (now non-blocking) to the process's
:class:`~actors.runtime.reader.SharedReader` and ends.

The shared reader calls :meth:`Connection.serve` when the socket is ready: it
reads what the socket has (one ``recv`` of up to 64 KiB per turn, so no
connection starves another), feeds the bytes to the connection's sans-I/O
:class:`~protocol.frames.FrameReader` (websocket-client does the upgrade and
writes frames; its reader was the client's largest cost), decodes each
frame once with the codec it was given and only ``tell``s the connection's
actor: ``Opened``, ``ConnectFailed``, ``Received`` (a batch),
``ReaderPaused``/``ReaderResumed``, ``Disconnected``. It never blocks: sockets
are non-blocking, and what the kernel cannot take at once waits in the
connection's outgoing buffer until the socket is writable.

Flow control is by credits: one credit per data frame. A connection out of
credits is paused: its socket is taken out of the selector, so it is not read
at all and TCP flow control slows the server instead of memory growing.
Whoever finally consumes the frame's event gives the credit back
(:meth:`Connection.grant`), which puts the socket back.

Writes (``send``/``ping``/``send_close``) come from the actor thread and, for
the answer to a server's ping or close, from the reader; a per-connection lock
keeps every frame whole on the wire.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pykka
import websocket

from protocol import ProtocolError
from protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
)

from .reader import SharedReader

# Frames drained from a socket into one message: one hop per batch, not per frame.
MAX_BATCH = 512
DEFAULT_MAX_FRAME_SIZE = 2**23  # 8 MiB: far above any notification, far below harm
READ_CHUNK = 65536

_log = logging.getLogger(__name__)


@attrs.frozen
class Opened:
    pass


@attrs.frozen
class ConnectFailed:
    reason: str
    status: int | None = None  # the HTTP status when the upgrade was answered
    terminal: bool = False  # no retry can fix it (e.g. the certificate does not verify)
    # No retry can fix it if it happens before the session exists (a URL with the wrong
    # scheme, a name that does not resolve); later the same error may be the network's.
    hopeless_at_start: bool = False


@attrs.frozen
class Pong:
    payload: bytes


@attrs.frozen
class Received:
    """Decoded messages, ``ProtocolError`` for malformed frames, and ``Pong``s, in order."""

    items: list[Any]


@attrs.frozen
class ReaderPaused:
    """The reader ran out of credits and stopped reading."""


@attrs.frozen
class ReaderResumed:
    pass


@attrs.frozen
class Disconnected:
    reason: str


class _PeerClosed(Exception):
    """Internal: the frame just parsed ends the connection (close frame)."""


_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CLOSED_BY_PEER = ("WebSocketConnectionClosedException: Connection to remote host was lost.")


class _UpgradeHeaders(list[str]):
    """The upgrade's extra headers, and the last check before the upgrade is written.

    An abort, or a connect deadline that passes, while websocket-client resolves
    the name or waits for the TCP connect has no socket to shut down yet. Once
    connected, websocket-client sets its socket and builds the upgrade request,
    iterating these headers: an abort that came before is honored there, before
    a byte of the upgrade goes out, instead of after a server that never
    answers has held the thread for whole socket timeouts.
    """

    def __init__(self, headers: list[str], check: Callable[[], None]) -> None:
        super().__init__(headers)
        self._check = check

    def __bool__(self) -> bool:
        return True  # iterated even when empty (websocket-client skips a falsy header)

    def __iter__(self) -> Iterator[str]:
        self._check()
        return super().__iter__()


# HTTP redirects websocket-client would follow; the connection refuses them instead.
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def _classified(exc: Exception) -> ConnectFailed:
    """A failed connect, with a hint where the error says what no retry can fix."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"{reason}: the host name does not resolve",
                             hopeless_at_start=True)
    if isinstance(exc, ssl.SSLError):  # a certificate that does not verify is caught before
        return ConnectFailed(f"{reason}: the server does not speak TLS here (for a plain "
                             f"server use ws://host:port)", hopeless_at_start=True)
    return ConnectFailed(reason)


def _not_started() -> None:
    """The connect thread of a connection not started yet: none."""


class Connection:
    def __init__(self, url: str, *, owner: pykka.ActorRef[Any],
                 decode: Callable[[bytes], Any], window: int, connect_timeout: float,
                 headers: dict[str, str] | None = None, name: str = "ws",
                 sslopt: dict[str, Any] | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._url = url
        self._name = name
        self._owner = owner
        self._decode = decode
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        # Never logged: the API key travels in here.
        self._headers = _UpgradeHeaders([f"{k}: {v}" for k, v in (headers or {}).items()],
                                        self._check_still_wanted)
        # UTF-8 is still checked: the codec decodes bytes and maps a bad text
        # frame to a ProtocolError; skipping websocket-client's pure-Python
        # validator is about 5x faster per frame (actors/DESIGN.md §12).
        # The upgrade's client, dropped once the socket is open (reads are the
        # reader's, writes go to the socket): it keeps locks, buffers and the
        # handshake's headers that every full garbage collection would walk.
        self._ws: websocket.WebSocket | None = websocket.WebSocket(
            skip_utf8_validation=True, enable_multithread=True, sslopt=sslopt)
        self._frames = FrameReader(max_frame_size)  # bytes read, not yet parsed (reader)
        self._eof = False  # the peer's FIN was read (reader only)
        # Guards the flags and credits below (actor thread, connect thread, reader).
        self._lock = threading.Lock()
        self._credits = window
        self._paused = False
        self._closing = False
        self._opened = False  # the upgrade completed
        self._connect_expired = False  # the owner's connect deadline passed first
        # Outgoing frames the kernel did not take yet, whole; guarded by _send_lock.
        self._send_lock = threading.Lock()
        self._out: collections.deque[bytes] = collections.deque()
        self._sock: socket.socket | None = None  # set once open, None once dropped
        self._shared_reader: SharedReader | None = None
        self.selector_events = 0  # what the shared reader's selector waits for
        self.finished = threading.Event()  # the socket is closed and released
        # The connect thread, held weakly once started: it ends after the upgrade, and
        # a Thread kept by each connection of each session (its Event, Condition,
        # locks) was a tenth of what a full garbage collection walked at 500
        # sessions. While it runs, threading holds it; after, join() has nothing
        # to wait for.
        self._connect_thread: Callable[[], threading.Thread | None] = _not_started
        self._started = False

    def start(self) -> None:
        thread = threading.Thread(target=self._connect_run, name=f"connect-{self._name}",
                                  daemon=True)
        thread.start()
        self._connect_thread = weakref.ref(thread)
        self._started = True

    # --- called from the actor thread ------

    def send(self, text: str) -> None:
        """Raises ``OSError``/``WebSocketException`` when the socket is gone."""
        self._write(websocket.ABNF.create_frame(text, websocket.ABNF.OPCODE_TEXT).format())

    def ping(self, payload: bytes = b"") -> None:
        try:
            self._write(websocket.ABNF.create_frame(payload,
                                                    websocket.ABNF.OPCODE_PING).format())
        except (OSError, websocket.WebSocketException):
            pass  # the reader reports the broken socket

    def grant(self, credits: int) -> None:
        with self._lock:
            self._credits += credits
            wake = self._paused and self._credits > 0
        if wake and self._shared_reader is not None:
            self._shared_reader.poke(self)

    def send_close(self) -> None:
        """Start the closing handshake (close frame); the reader sees the answer."""
        try:
            self._write(websocket.ABNF.create_frame(
                websocket.STATUS_NORMAL.to_bytes(2, "big"),
                websocket.ABNF.OPCODE_CLOSE).format())
        except (OSError, websocket.WebSocketException):
            pass

    def expire_connect(self) -> bool:
        """The connect deadline passed: cut a connect still in progress; True if it was.

        websocket-client applies its ``timeout`` to each socket operation, so a
        server that trickles its ``101`` reply one byte at a time never trips it.
        The owner's timer calls this at ``Timing.connect`` after :meth:`start`;
        shutting the socket down ends the blocked upgrade read at once. Before
        the TCP and TLS steps have handed over their socket there is nothing to
        shut down; those steps are each bounded by the per-operation timeout.
        """
        with self._lock:
            if self._opened or self._closing:
                return False
            self._connect_expired = True
        self._shutdown_socket()
        return True

    def abort(self) -> None:
        """End the connection: no more reads, the socket shut down (no close frame)."""
        with self._lock:
            self._closing = True
        self._shutdown_socket()
        if self._shared_reader is not None:
            self._shared_reader.poke(self)

    def _shutdown_socket(self) -> None:
        # A socket closed meanwhile has fd -1 in its object, so this cannot hit a
        # reused descriptor: it raises OSError, which is moot.
        ws = self._ws
        sock = ws.sock if ws is not None else self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join(self, timeout: float) -> bool:
        """Wait until the socket is closed and released (and the reader, if this
        was its last connection, has ended); False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        thread = self._connect_thread()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._started and (thread is None or not thread.is_alive()):
            self.finished.wait(max(0.0, deadline - time.monotonic()))
        reader = self._shared_reader
        if reader is not None and self.finished.is_set():
            reader.join_if_stopping(max(0.0, deadline - time.monotonic()))
        return self.finished.is_set() or not self._started

    # --- writing (actor thread or reader) ------

    def _write(self, frame: bytes) -> None:
        with self._send_lock:
            if self._sock is None:
                raise websocket.WebSocketConnectionClosedException("socket is already closed.")
            self._out.append(frame)
            self._flush_locked()
            waiting = bool(self._out)
        if waiting and self._shared_reader is not None:
            self._shared_reader.poke(self)  # the reader writes the rest when the socket can take it

    def _flush_locked(self) -> None:
        """Write what the kernel takes now; raises ``OSError`` for a broken socket."""
        sock = self._sock
        assert sock is not None
        out = self._out
        while out:
            chunk = out[0]
            try:
                sent = sock.send(chunk)
            except _WOULD_BLOCK:
                return
            if sent < len(chunk):
                out[0] = chunk[sent:]  # plain TCP only; TLS writes a record whole or not
            else:
                out.popleft()

    # --- the connect thread ------

    def _tell(self, message: Any) -> None:
        try:
            self._owner.tell(message)
        except pykka.ActorDeadError:
            pass  # the actor already reported the loss and stopped

    def _connect_run(self) -> None:
        try:
            self._connect()
        except ssl.SSLCertVerificationError as exc:
            self._failed(ConnectFailed(f"TLS certificate not trusted: {exc.verify_message}",
                                       terminal=True))
            return
        except websocket.WebSocketBadStatusException as exc:
            self._failed(ConnectFailed(f"upgrade answered HTTP {exc.status_code}",
                                       exc.status_code))
            return
        except Exception as exc:  # noqa: BLE001 - every connect failure is reported
            with self._lock:
                expired = self._connect_expired
            redirect = self._redirect_status()
            if expired:
                self._failed(ConnectFailed(f"timed out after {self._connect_timeout}s "
                                           "(TCP + TLS + upgrade)"))
            elif redirect is not None:
                self._failed(ConnectFailed(
                    f"upgrade answered HTTP {redirect}, a redirect: not followed (the URL "
                    "must be the server's own)", redirect))
            else:
                self._failed(_classified(exc))
            return
        assert self._ws is not None
        sock = self._ws.sock
        assert sock is not None
        sock.setblocking(False)
        with self._send_lock:
            self._sock = sock
        self._ws = None  # the socket is the connection's now (_shutdown_socket reads either)
        # Opened goes first: the actor must see it before any Received.
        self._tell(Opened())
        reader = SharedReader.acquire()
        self._shared_reader = reader
        reader.add(self)

    def _redirect_status(self) -> int | None:
        """The status of a redirect that ended the upgrade (redirect_limit=0), if one did."""
        response = getattr(self._ws, "handshake_response", None)
        status = getattr(response, "status", None)
        return status if status in _REDIRECT_STATUSES else None

    def _failed(self, message: ConnectFailed) -> None:
        self._tell(message)
        assert self._ws is not None  # dropped only once open
        self._ws.shutdown()
        self.finished.set()

    def _connect(self) -> None:
        assert self._ws is not None
        # No redirects: websocket-client would follow one to whatever host the
        # answer names, with the same headers (the API key), maybe over ws://.
        self._ws.connect(self._url, header=self._headers, timeout=self._connect_timeout,
                         suppress_origin=True, redirect_limit=0)
        with self._lock:
            self._check_still_wanted()
            self._opened = True

    def _check_still_wanted(self) -> None:
        """Raise if the connection was aborted or its connect deadline passed."""
        if self._closing:
            raise ConnectionAbortedError("closed while connecting")
        if self._connect_expired:
            raise TimeoutError("connect deadline passed")

    # --- what the shared reader uses (actors.runtime.reader) ------

    @property
    def sock(self) -> socket.socket | None:
        """The open socket, once connected (None before, and after it is closed)."""
        return self._sock

    def reader_failed(self, exc: BaseException) -> None:
        """The shared reader hit a bug serving this connection: it is reported lost."""
        _log.error("reader: %s connection failed: %r", self._name, exc, exc_info=exc)
        self._tell(Disconnected(f"reader failed: {exc!r}"))

    # --- the reader thread ------

    def serve(self, reader: SharedReader) -> bool:
        """One turn: read once, parse, tell one batch. True when more is ready at once."""
        # Credits and the paused flag change together, under the lock that grant()
        # takes: a grant that comes after this sees paused and wakes the reader,
        # one that comes before is in the credits read here. No grant is lost.
        with self._lock:
            closing, credits, was_paused = self._closing, self._credits, self._paused
            self._paused = credits <= 0
        if closing:
            reader.drop(self)
            return False
        with self._send_lock:
            if self._out and self._sock is not None:
                try:
                    self._flush_locked()
                except OSError:
                    pass  # the read side reports the broken socket
            writing = bool(self._out)
        if credits <= 0:
            if not was_paused:
                self._tell(ReaderPaused())
            reader.interest(self, selectors.EVENT_WRITE if writing else 0)
            return False
        if was_paused:
            self._tell(ReaderResumed())
        reader.interest(self, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing
                                                       else 0))
        batch: list[Any] = []
        data_frames = 0
        ended: str | None = None
        more = False  # a whole frame is left in the buffer for the next turn
        try:
            if not self._eof and not self._frames.ready():
                self._read_socket()
            allowance = min(credits, MAX_BATCH)
            frames, decode = self._frames, self._decode
            while data_frames < allowance and len(batch) < MAX_BATCH:
                # Nearly every frame: whole data messages, a read's worth per call.
                payloads = frames.data_messages(min(allowance - data_frames,
                                                    MAX_BATCH - len(batch)))
                if payloads:
                    for payload in payloads:
                        try:
                            batch.append(decode(payload))
                        except ProtocolError as exc:
                            batch.append(exc)
                    data_frames += len(payloads)
                    continue
                message = frames.next()
                if message is None:
                    break
                opcode, payload = message
                if opcode == OP_TEXT or opcode == OP_BINARY:
                    try:
                        batch.append(decode(payload))
                    except ProtocolError as exc:
                        batch.append(exc)
                    data_frames += 1
                else:
                    batch.append(self._control(opcode, payload))
            # Inside the try: the next frame's header is checked here, and a bad
            # one ends the connection like any framing error.
            more = self._frames.ready()
            if self._eof and not more:
                ended = _CLOSED_BY_PEER
        except _PeerClosed as closed:
            ended = str(closed) or None
            if not ended:
                self._flush(batch, data_frames)
                reader.drop(self)
                return False
        except Exception as exc:  # noqa: BLE001 - any read failure ends the connection
            ended = f"{type(exc).__name__}: {exc}"
        self._flush(batch, data_frames)
        if ended is not None:
            with self._lock:
                closing = self._closing
            if not closing:
                self._tell(Disconnected(ended))
            reader.drop(self)
            return False
        if more:
            return True  # left for the next turn (batch full), or waiting for credits
        sock = self._sock
        pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes
        return bool(pending is not None and pending() > 0) or self._eof

    def _read_socket(self) -> None:
        sock = self._sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("Connection is closed")
        try:
            chunk = sock.recv(READ_CHUNK)
        except _WOULD_BLOCK:
            return
        if not chunk:
            self._eof = True
            return
        self._frames.feed(chunk)

    def _control(self, opcode: int, payload: bytes) -> Pong:
        """A control frame: a pong (or a ping, answered here: proof of life too),
        or the server's close (answered, then ``_PeerClosed``)."""
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_PING:
            try:
                self._write(websocket.ABNF.create_frame(payload,
                                                        websocket.ABNF.OPCODE_PONG).format())
            except (OSError, websocket.WebSocketException):
                pass  # the read side reports the broken socket
            return Pong(b"")
        assert opcode == OP_CLOSE  # the reader hands out no other control opcode
        self.send_close()
        with self._lock:
            closing = self._closing
        if closing:
            raise _PeerClosed("")
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        raise _PeerClosed(f"closed by server (code {code})")

    def _flush(self, batch: list[Any], data_frames: int) -> None:
        with self._lock:
            self._credits -= data_frames
        if batch:
            self._tell(Received(batch))

    def close_socket(self) -> None:
        """Reactor: close the socket (the connection is being dropped)."""
        with self._send_lock:
            sock, self._sock = self._sock, None
            self._out.clear()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass  # closed already
