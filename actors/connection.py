"""One WebSocket (websocket-client) and the reader thread that owns its blocking calls.

The reader thread connects (the whole of TCP + TLS + upgrade bounded by
``Timing.connect``, see :meth:`Connection.expire_connect`), then loops on
``recv``; it decodes each frame once with the codec it was given and only
``tell``s its actor: ``Opened``, ``ConnectFailed``, ``Received`` (a batch),
``ReaderPaused``/``ReaderResumed``, ``Disconnected``. The actor thread may
``send``/``ping`` beside it (websocket-client locks sends).

Flow control is by credits: the reader takes one credit per data frame and
stops reading at zero, so TCP flow control slows the server instead of memory
growing. Whoever finally consumes the frame's event gives the credit back
(:meth:`Connection.grant`).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import attrs
import pykka
import websocket

from protocol import ProtocolError

# Frames drained from the socket into one message when they are already there:
# one hop per batch instead of one per frame.
MAX_BATCH = 512
DEFAULT_MAX_FRAME_SIZE = 2**23  # 8 MiB: far above any notification, far below harm


@attrs.frozen
class Opened:
    pass


@attrs.frozen
class ConnectFailed:
    reason: str
    status: int | None = None  # the HTTP status when the upgrade was answered
    terminal: bool = False  # no retry can fix it (e.g. the certificate does not verify)


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


class FrameTooLarge(websocket.WebSocketException):
    pass


def _limit_frame_size(ws: websocket.WebSocket, max_frame_size: int) -> None:
    """Refuse a frame by its header, before its payload is read into memory.

    websocket-client has no size limit; its frame reader learns the length
    first, so the check wraps that step of this connection's reader.
    """
    reader = ws.frame_buffer
    read_length = reader.recv_length

    def checked() -> None:
        read_length()
        if reader.length is not None and reader.length > max_frame_size:
            raise FrameTooLarge(f"frame of {reader.length} bytes exceeds max_frame_size "
                                f"{max_frame_size}")

    setattr(reader, "recv_length", checked)  # noqa: B010 - a method of this one reader


class _ReadBuffer:
    """Socket reads of up to 64 KiB for websocket-client's frame reader.

    Left alone it makes two ``recv`` calls per frame (header, then payload);
    through this buffer a burst of notifications costs one call per 64 KiB,
    and "is another frame already here?" is a length check, not a ``select``.
    """

    CHUNK = 65536

    def __init__(self, ws: websocket.WebSocket) -> None:
        reader = ws.frame_buffer
        self._raw = reader.recv
        self._data = b""
        self._pos = 0
        setattr(reader, "recv", self.recv)  # noqa: B010 - this connection's reader only

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            self._data = self._raw(self.CHUNK)
            self._pos = 0
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        return len(self._data) - self._pos


class Connection:
    def __init__(self, url: str, *, owner: pykka.ActorRef[Any],
                 decode: Callable[[bytes], Any], window: int, connect_timeout: float,
                 headers: dict[str, str] | None = None, name: str = "ws",
                 sslopt: dict[str, Any] | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._url = url
        self._owner = owner
        self._decode = decode
        self._credits = window
        self._connect_timeout = connect_timeout
        # Never logged: the API key travels in here.
        self._headers = [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._sslopt = sslopt
        # UTF-8 is still checked: the codec decodes bytes and maps a bad text
        # frame to a ProtocolError; skipping websocket-client's pure-Python
        # validator is about 5x faster per frame (DESIGN.md §5).
        self._ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True,
                                       sslopt=sslopt)
        _limit_frame_size(self._ws, max_frame_size)
        self._read_buffer = _ReadBuffer(self._ws)
        self._condition = threading.Condition()
        self._closing = False
        self._opened = False  # the upgrade completed (guarded by _condition)
        self._connect_expired = False  # the owner's connect deadline passed first
        # "Is another frame here?" without select(): select() refuses fds >= 1024.
        self._poll: select.poll | None = None
        self._thread = threading.Thread(target=self._run, name=f"reader-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- called from the actor thread ------

    def send(self, text: str) -> None:
        """Raises ``OSError``/``WebSocketException`` when the socket is gone."""
        self._ws.send(text)

    def ping(self, payload: bytes = b"") -> None:
        try:
            self._ws.ping(payload)
        except (OSError, websocket.WebSocketException):
            pass  # the reader reports the broken socket

    def grant(self, credits: int) -> None:
        with self._condition:
            self._credits += credits
            self._condition.notify()

    def send_close(self) -> None:
        """Start the closing handshake (close frame); the reader sees the answer."""
        try:
            self._ws.send_close()
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
        with self._condition:
            if self._opened or self._closing:
                return False
            self._connect_expired = True
        self._shutdown_socket()
        return True

    def abort(self) -> None:
        """Unblock the reader and end it: shut the socket down (no close frame)."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        # A socket closed meanwhile has fd -1 in its object, so this cannot hit a
        # reused descriptor: it raises OSError, which is moot.
        sock = self._ws.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the reader thread ------

    def _tell(self, message: Any) -> None:
        try:
            self._owner.tell(message)
        except pykka.ActorDeadError:
            pass  # the actor already reported the loss and stopped

    def _run(self) -> None:
        try:
            self._connect()
        except ssl.SSLCertVerificationError as exc:
            self._tell(ConnectFailed(f"TLS certificate not trusted: {exc.verify_message}",
                                     terminal=True))
            self._ws.shutdown()
            return
        except websocket.WebSocketBadStatusException as exc:
            self._tell(ConnectFailed(f"upgrade answered HTTP {exc.status_code}",
                                     exc.status_code))
            self._ws.shutdown()
            return
        except Exception as exc:  # noqa: BLE001 - every connect failure is reported
            with self._condition:
                expired = self._connect_expired
            if expired:
                self._tell(ConnectFailed(f"timed out after {self._connect_timeout}s "
                                         "(TCP + TLS + upgrade)"))
            else:
                self._tell(ConnectFailed(f"{type(exc).__name__}: {exc}"))
            self._ws.shutdown()
            return
        try:
            self._read_loop()
        finally:
            self._ws.shutdown()

    def _connect(self) -> None:
        self._ws.connect(self._url, header=self._headers, timeout=self._connect_timeout,
                         suppress_origin=True)
        self._ws.settimeout(None)  # liveness is the actor's keepalive deadline
        with self._condition:
            if self._closing:
                raise ConnectionAbortedError("closed while connecting")
            if self._connect_expired:
                raise TimeoutError("connect deadline passed")
            self._opened = True
        if hasattr(select, "poll") and self._ws.sock is not None:
            self._poll = select.poll()
            self._poll.register(self._ws.sock.fileno(), select.POLLIN)
        self._tell(Opened())

    def _read_loop(self) -> None:
        paused = False
        while True:
            with self._condition:
                while self._credits <= 0 and not self._closing:
                    if not paused:
                        paused = True
                        self._tell(ReaderPaused())
                    self._condition.wait()
                if self._closing:
                    return
                # Credits are taken per batch, not per frame: one lock round per batch.
                allowance = min(self._credits, MAX_BATCH)
            if paused:
                paused = False
                self._tell(ReaderResumed())
            batch: list[Any] = []
            data_frames = 0
            ended = False
            try:
                while True:
                    item, is_data = self._read_one()
                    if item is None:
                        ended = True
                        break
                    batch.append(item)
                    data_frames += is_data
                    if data_frames >= allowance or len(batch) >= MAX_BATCH or (
                            not self._more_ready()):
                        break
            except Exception as exc:  # noqa: BLE001 - any read failure ends the connection
                self._flush(batch, data_frames)
                with self._condition:
                    closing = self._closing
                if not closing:
                    self._tell(Disconnected(f"{type(exc).__name__}: {exc}"))
                return
            self._flush(batch, data_frames)
            if ended:
                return

    def _flush(self, batch: list[Any], data_frames: int) -> None:
        with self._condition:
            self._credits -= data_frames
        if batch:
            self._tell(Received(batch))

    def _read_one(self) -> tuple[Any, bool]:
        """One decoded item and whether it was a data frame; ``None`` once the peer closed."""
        opcode, frame = self._ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT or opcode == websocket.ABNF.OPCODE_BINARY:
            try:
                return self._decode(frame.data), True
            except ProtocolError as exc:
                return exc, True
        if opcode == websocket.ABNF.OPCODE_PONG:
            return Pong(bytes(frame.data)), False
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            with self._condition:
                closing = self._closing
            if not closing:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                self._tell(Disconnected(f"closed by server (code {code})"))
            return None, False
        return Pong(b""), False  # a ping (answered by websocket-client): proof of life

    def _more_ready(self) -> bool:
        """True when another frame can be read without blocking."""
        if self._read_buffer.pending():
            return True
        sock = self._ws.sock
        if sock is None:
            return False
        pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes
        if pending is not None and pending() > 0:
            return True
        if self._poll is not None:
            # Any event counts (POLLHUP, POLLERR too): the next read then returns at once.
            return bool(self._poll.poll(0))
        # No poll() (Windows): its select() takes socket handles, without the
        # POSIX limit on descriptor values.
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
