"""A blast server for the bench: PubSub notifications from memory, as fast as the socket takes them.

    python scripts/blast_server.py [--port 0] [--slots 60] [--per-slot 2500]

The local simulator builds every notification in Python on one event loop, so
the client can never be measured faster than ~60,000 notifications/s against
it. This server speaks just enough of the protocol for a managed session (and
the bench's raw websocket-client loop) to connect and subscribe, and then
writes notifications that were framed once, at start-up, with one ``sendall``
per slot: the client's ceiling, not the server's.

What it speaks, over the real HTTP upgrade and real RFC 6455 framing (client
frames masked, server frames not):

* ``/backtest`` (control): ``createBacktestSession`` -> ``sessionCreated``, the
  anchor ``slotNotification`` and ``readyForContinue``; ``continue`` -> each slot's
  notifications on every subscribed PubSub socket, a ``slotNotification`` per
  slot, then ``readyForContinue`` or ``completed``; ``closeBacktestSession`` ->
  ``success``. Responses are sequenced (``seqId``), as a real server's are.
* ``/backtest/<session_id>`` (PubSub): ``transactionSubscribe`` -> an ack; the
  first subscription of a connection receives the stream.
* Pings are answered with a pong queued *after* everything written before it,
  as the session's barriers require (actors/supervision/subscription.py).

No attach, no replay, no faults: one session at a time, for throughput only.
Every connection has a reader thread and a writer thread; the writer drains a
queue of pre-built byte strings, so a slow reader never blocks the control
connection (its keepalive pongs keep coming while the stream waits for TCP).
It prints ``serving ws://127.0.0.1:<port>/backtest`` on stderr when it listens.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import queue
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import (  # noqa: E402
    Close,
    Completed,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    SessionCreated,
    SlotNotification,
    Subscribe,
    SubscribeAck,
    Success,
    TransactionNotification,
    Unsubscribe,
    UnsubscribeAck,
    decode_pubsub_request,
    decode_request,
    encode_pubsub,
    encode_response,
)
from protocol.codec import encode_notification_result, notification_frame  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
SUBSCRIPTION = 1  # the id the first subscribe of a connection is given; frames carry it
FIRST_SLOT = 400_000_000
_STOP = b""  # queued last: the writer ends


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A server frame (FIN, unmasked)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def slot_blobs(slots: int, per_slot: int) -> list[bytes]:
    """Each slot's notifications, framed and joined: one ``sendall`` per slot.

    A notification is shaped like the simulator's (about 420 bytes: signature,
    transaction, meta, index), with a signature unique to the run, so the
    session's duplicate filter keeps every one.
    """
    blobs = []
    for slot in range(FIRST_SLOT + 1, FIRST_SLOT + 1 + slots):
        parts = []
        for index in range(per_slot):
            signature = base64.b64encode(
                hashlib.sha512(f"{slot}/{index}".encode()).digest()).decode()[:86]
            result = encode_notification_result(TransactionNotification(
                SUBSCRIPTION, slot, signature,
                {"signatures": [signature],
                 "message": {"accountKeys": ["8FwVNU7nnbro5bDTJ9FcGDB8gV33h7ahzqzVv2WaMU93"]}},
                {"err": None, "fee": 5000}, index))
            parts.append(frame(notification_frame("transactionNotification", result,
                                                  SUBSCRIPTION).encode()))
        blobs.append(b"".join(parts))
    return blobs


class Conn:
    """One accepted socket: its frames in (``frames()``), byte strings out (``send``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.buf = b""
        self.writer = threading.Thread(target=self._write, daemon=True)

    def handshake(self) -> str:
        """Answer the HTTP upgrade; the request's path."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(
            headers["sec-websocket-key"].encode() + GUID).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                           ).encode())
        self.writer.start()
        return lines[0].split(" ")[1]

    def send(self, data: bytes) -> None:
        self.out.put(data)

    def text(self, payload: str) -> None:
        self.out.put(frame(payload.encode()))

    def close(self) -> None:
        self.out.put(_STOP)

    def _write(self) -> None:
        try:
            while (data := self.out.get()) is not _STOP:
                self.sock.sendall(data)
        except OSError:
            pass  # the client went away: its reader thread ends the connection
        finally:
            self.sock.close()

    def _read(self, count: int) -> bytes:
        while len(self.buf) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def frames(self) -> Iterator[tuple[int, bytes]]:
        while True:
            yield self._frame()

    def _frame(self) -> tuple[int, bytes]:
        """The next client frame (masked; this client never fragments)."""
        b0, b1 = self._read(2)
        size = b1 & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if b1 & 0x80 else b"\0\0\0\0"
        data = self._read(size)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return b0 & 0x0F, payload


class Blast:
    """The server: one session at a time, its PubSub sockets, the pre-built slots."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs
        self.sessions: dict[str, list[Conn]] = {}
        self.count = itertools.count(1)
        self.lock = threading.Lock()

    def serve(self, listener: socket.socket) -> None:
        while True:
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        conn = Conn(sock)
        try:
            path = conn.handshake()
            if path.rstrip("/") == "/backtest":
                self._control(conn)
            else:
                self._pubsub(conn, path.rsplit("/", 1)[-1])
        except (ConnectionError, OSError, ValueError):
            pass  # the client hung up or sent what this server does not speak
        finally:
            conn.close()

    def _common(self, conn: Conn, opcode: int, payload: bytes) -> bool:
        """Pings and closes; False when the connection ends."""
        if opcode == OP_PING:
            conn.send(frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            conn.send(frame(payload[:2], OP_CLOSE))
            return False
        return True

    def _control(self, conn: Conn) -> None:
        seq = itertools.count(1)
        session_id, slot, last = "", FIRST_SLOT, FIRST_SLOT

        def emit(msg: object) -> None:
            conn.text(encode_response(msg, next(seq)))  # type: ignore[arg-type]

        for opcode, payload in conn.frames():
            if not self._common(conn, opcode, payload):
                return
            if opcode != OP_TEXT:
                continue
            request = decode_request(payload)
            if isinstance(request, CreateSession):
                session_id = f"blast_{next(self.count)}"
                with self.lock:
                    self.sessions = {session_id: []}  # one session at a time
                slot = FIRST_SLOT
                last = min(request.end_slot, FIRST_SLOT + len(self.blobs))
                emit(SessionCreated(session_id, f"/backtest/{session_id}"))
                emit(SlotNotification(slot))
                emit(ReadyForContinue())
            elif isinstance(request, ContinueParams):
                with self.lock:
                    subscribers = list(self.sessions.get(session_id, ()))
                for _ in range(min(request.advance_count, last - slot)):
                    slot += 1
                    blob = self.blobs[slot - FIRST_SLOT - 1]
                    for sub in subscribers:
                        sub.send(blob)
                    emit(SlotNotification(slot))
                emit(ReadyForContinue() if slot < last else Completed(None))
            elif isinstance(request, Close):
                conn.text(encode_response(Success()))

    def _pubsub(self, conn: Conn, session_id: str) -> None:
        subscribed = False
        for opcode, payload in conn.frames():
            if not self._common(conn, opcode, payload):
                return
            if opcode != OP_TEXT:
                continue
            request = decode_pubsub_request(payload)
            if isinstance(request, Subscribe):
                number = SUBSCRIPTION if not subscribed else 1000 + request.id
                conn.text(encode_pubsub(SubscribeAck(request.id, number)))
                if not subscribed:
                    with self.lock:
                        self.sessions.setdefault(session_id, []).append(conn)
                subscribed = True
            elif isinstance(request, Unsubscribe):
                conn.text(encode_pubsub(UnsubscribeAck(request.id, True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=60)
    parser.add_argument("--per-slot", type=int, default=2500)
    args = parser.parse_args(argv)
    blobs = slot_blobs(args.slots, args.per_slot)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=64)
    print(f"serving ws://127.0.0.1:{listener.getsockname()[1]}/backtest "
          f"({args.slots} slots x {args.per_slot} notifications)", file=sys.stderr, flush=True)
    try:
        Blast(blobs).serve(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
