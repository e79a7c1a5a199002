"""A TCP fault proxy: the network's failures, between a client and a server.

The simulator's own faults (:mod:`protocol.simulator.faults`) break a
connection from inside the server. Real failures happen between the two
ends, where neither can see them: a NAT forgets a mapping, a host vanishes, a
link goes silent or slow. :class:`FaultProxy` sits on that path (one target,
given at construction; it never connects anywhere else) and does those things
to live connections, with Toxiproxy's fault kinds as the model:

* ``reset``: TCP RST (``SO_LINGER`` 0, then close) to the client, the
  upstream, or both. A side not reset is left open and silent (what a middlebox
  that resets one side leaves behind); its peer must find that out by itself.
* ``half_open``: one side is forgotten without a word: nothing more is read
  from or written to it, and it is not closed (no FIN, no RST) while the proxy
  runs. The other side stays open and hears nothing either: the commonest real
  failure (dead host, NAT timeout, load balancer that lost its state).
* ``blackhole``: both TCP connections stay open and nothing is forwarded either
  way until :meth:`FaultProxy.heal` (then what was held goes through, as after
  a partition that healed before TCP gave up).
* ``latency``, ``slicer`` (every chunk cut into 1–8 byte TCP segments),
  ``bandwidth``: conditions ("toxics") on live and future connections.
* ``refuse``: stop accepting for a while (connects are refused by the OS).
* ``lose_pongs``: the next N pong frames (optionally only those whose payload
  starts with a prefix) from the server vanish from the byte stream, as when a
  server keeps only its latest unsent pong (tungstenite does) or a middlebox
  eats control frames. It applies to connections opened after the call: the
  proxy must follow frame boundaries from the first byte of the response.
* ``corrupt_frames``: the next N data frames from the server get a reserved bit
  set (RSV1, with no extension negotiated), as a broken middlebox would send
  them; the client must fail that connection and resume. Like ``lose_pongs``
  it applies to connections opened after the call.

Faults apply to all connections or to those carrying one kind of traffic: the
proxy reads the HTTP upgrade request line of each connection as it passes and
classifies ``GET /backtest`` as ``"control"`` and ``GET /backtest/<id>`` as
``"pubsub"`` (optionally narrowed to one session id). Everything runs on one
asyncio loop in one thread; memory is bounded (a few chunks queued per
direction, a connection limit) and :meth:`FaultProxy.close` leaves no thread
and no socket behind. Every public method may be called from any thread and
returns once the fault is in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

log = logging.getLogger("protocol.simulator.proxy")

Which = Literal["all", "control", "pubsub"]
Side = Literal["client", "upstream", "both"]
T = TypeVar("T")

CHUNK = 65536
QUEUE_CHUNKS = 8  # per direction: at most QUEUE_CHUNKS * CHUNK bytes held per direction
REQUEST_LINE_MAX = 4096  # bytes read to classify a connection
ROLES = ("control", "pubsub", "other")
FAULT_KINDS = ("reset", "half_open", "blackhole", "latency", "slicer", "bandwidth", "refuse",
               "lose_pongs", "corrupt_frames")
OPCODE_PONG = 0xA
DATA_OPCODES = (0x1, 0x2)
RSV1 = 0x40


@attrs.define
class Toxics:
    """Conditions applied to every chunk forwarded on a kind of connection."""

    latency: float = 0.0  # seconds added to each chunk (pipelined, not per round trip)
    slice_min: int = 0  # 0: no slicing
    slice_max: int = 0
    slice_delay: float = 0.0  # seconds between slices
    bandwidth: float | None = None  # bytes per second, per direction and connection
    pongs_to_lose: int = 0  # the next pongs (of new connections) to remove
    pong_prefix: bytes = b""
    frames_to_corrupt: int = 0  # the next data frames (of new connections) to corrupt
    frames_to_pass: int = 0  # ... once this many more have passed untouched


class _FrameFilter:
    """Follows the server's side of one connection: cuts matching pongs out, sets
    a reserved bit on data frames to corrupt.

    Server frames are unmasked (RFC 6455 5.1), so a frame's length is in its
    header. Bytes pass through as soon as the frames they belong to are
    complete; only the HTTP response head and whole frames are forwarded.
    """

    def __init__(self, toxics: Toxics, lost: Callable[[], None],
                 corrupted: Callable[[], None]) -> None:
        self._toxics = toxics
        self._lost = lost
        self._corrupted = corrupted
        self._buffer = bytearray()
        self._in_head = True
        self._passthrough = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        if self._in_head:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return b""
            upgraded = self._buffer.startswith(b"HTTP/1.1 101")
            out += self._buffer[:end + 4]
            del self._buffer[:end + 4]
            self._in_head = False
            if not upgraded:  # a refused upgrade: what follows is an HTTP body
                self._passthrough = True
        if self._passthrough:
            out += self._buffer
            self._buffer.clear()
            return bytes(out)
        while (size := self._frame_size()) is not None and len(self._buffer) >= size[0]:
            total, header = size
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            opcode = frame[0] & 0x0F
            if (opcode == OPCODE_PONG and self._toxics.pongs_to_lose > 0
                    and frame[header:].startswith(self._toxics.pong_prefix)):
                self._toxics.pongs_to_lose -= 1
                self._lost()
                continue
            if opcode in DATA_OPCODES and self._toxics.frames_to_pass > 0:
                self._toxics.frames_to_pass -= 1
            elif opcode in DATA_OPCODES and self._toxics.frames_to_corrupt > 0:
                self._toxics.frames_to_corrupt -= 1
                self._corrupted()
                frame = bytes([frame[0] | RSV1]) + frame[1:]
            out += frame
        return bytes(out)

    def _frame_size(self) -> tuple[int, int] | None:
        """(frame length, header length) once the header is complete."""
        if len(self._buffer) < 2:
            return None
        length = self._buffer[1] & 0x7F
        if length == 126:
            if len(self._buffer) < 4:
                return None
            return 4 + struct.unpack("!H", self._buffer[2:4])[0], 4
        if length == 127:
            if len(self._buffer) < 10:
                return None
            return 10 + struct.unpack("!Q", self._buffer[2:10])[0], 10
        return 2 + length, 2


class _Conn:
    """One proxied connection: the client's socket, the upstream's, their pumps."""

    def __init__(self, number: int, client: socket.socket) -> None:
        self.number = number
        self.client = client
        self.upstream: socket.socket | None = None
        self.role = "other"
        self.session_id: str | None = None
        self.head = b""  # the start of the request, until its first line is complete
        self.classified = False
        self.state = "connecting"  # connecting, open, blackhole, forgotten, closed
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.pumps: list[asyncio.Task[None]] = []
        self.eof = 0  # directions finished with an orderly EOF
        self.frames: _FrameFilter | None = None  # set at open for frame-level toxics

    def matches(self, which: Which, session_id: str | None) -> bool:
        if self.state not in ("open", "blackhole"):
            return False
        if session_id is not None and self.session_id != session_id:
            return False
        return which == "all" or which == self.role

    def sniff(self, data: bytes) -> None:
        """Classify by the upgrade request line (``GET <path> HTTP/1.1``)."""
        self.head += data[:REQUEST_LINE_MAX - len(self.head)]
        line, found, _ = self.head.partition(b"\r\n")
        if not found and len(self.head) < REQUEST_LINE_MAX:
            return
        self.classified = True
        parts = line.split(b" ")
        if len(parts) >= 2 and parts[0] == b"GET":
            path = parts[1].split(b"?", 1)[0].decode("latin-1")
            if path == "/backtest":
                self.role = "control"
            elif path.startswith("/backtest/"):
                self.role = "pubsub"
                self.session_id = path[len("/backtest/"):]
        self.head = b""


def _reset(sock: socket.socket | None) -> None:
    """Close with RST: SO_LINGER on with a zero timeout, then close."""
    if sock is None or sock.fileno() < 0:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _close(sock: socket.socket | None) -> None:
    if sock is not None and sock.fileno() >= 0:
        sock.close()


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` that injects network faults.

    ``with FaultProxy("127.0.0.1", sim.port) as proxy:`` then connect to
    ``proxy.url_for(sim.url)``. The simulator answers ``rpc_endpoint`` as a
    path, so the PubSub connections of a session created through the proxy go
    through it too.
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, *, max_connections: int = 256,
                 connect_timeout: float = 5.0, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self._port = listen_port
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._rng = random.Random(seed)
        self._toxics = {role: Toxics() for role in ROLES}
        self._conns: set[_Conn] = set()
        # Forgotten sockets (half-open), kept open and untouched until close();
        # bounded: past max_connections the oldest is finally closed.
        self._forgotten: deque[socket.socket] = deque()
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self._forwarded = {"up": 0, "down": 0}
        self._slices = 0
        self._pongs_lost = 0
        self._frames_corrupted = 0
        self._accepted = 0
        self._numbers = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if not self._started:
            self._thread.start()
            self._started = True
            self._call(self._listen)
        return self

    def close(self) -> None:
        """Close every connection and the listener; join the thread."""
        if not self._started:
            return
        self._started = False
        try:
            self._call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (path and query kept)."""
        parts = urlsplit(url)
        netloc = f"{self.listen_host}:{self._port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # --- faults (any thread) ---------------------------------------------------------

    def reset(self, which: Which = "all", *, side: Side = "both",
              session_id: str | None = None) -> int:
        """RST one side of each matching connection, or both; how many connections."""
        return int(self._call(lambda: self._each(which, session_id, "reset",
                                                 lambda c: self._reset_conn(c, side))))

    def half_open(self, which: Which = "all", *, side: Literal["client", "upstream"] = "client",
                  session_id: str | None = None) -> int:
        """Forget one side of each matching connection; the other stays open and silent."""
        return int(self._call(lambda: self._each(which, session_id, "half_open",
                                                 lambda c: self._forget(c, side))))

    def blackhole(self, which: Which = "all", *, session_id: str | None = None) -> int:
        """Forward nothing either way on matching connections (both stay open)."""
        return int(self._call(lambda: self._each(which, session_id, "blackhole",
                                                 self._blackhole)))

    def heal(self, which: Which = "all", *, session_id: str | None = None) -> int:
        """Lift the blackhole of matching connections: what was held goes through."""
        return int(self._call(lambda: self._each(which, session_id, None, self._heal)))

    def latency(self, ms: float, which: Which = "all") -> None:
        """Add ``ms`` to every chunk forwarded (0 removes it); live and future connections."""
        self._set_toxic(which, "latency", lambda t: setattr(t, "latency", ms / 1000))

    def slicer(self, min_bytes: int = 1, max_bytes: int = 8, delay_ms: float = 0.0,
               which: Which = "all") -> None:
        """Cut every chunk into segments of ``min_bytes``..``max_bytes`` (0, 0: off)."""
        if not 0 <= min_bytes <= max_bytes or (max_bytes and not min_bytes):
            raise ValueError(f"slice sizes: expected 1 <= min <= max, got {min_bytes}, "
                             f"{max_bytes}")

        def apply(t: Toxics) -> None:
            t.slice_min, t.slice_max, t.slice_delay = min_bytes, max_bytes, delay_ms / 1000

        self._set_toxic(which, "slicer", apply)

    def bandwidth(self, bytes_per_second: float | None, which: Which = "all") -> None:
        """Cap each direction of each connection (None removes the cap)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second: expected > 0, got {bytes_per_second}")
        self._set_toxic(which, "bandwidth",
                        lambda t: setattr(t, "bandwidth", bytes_per_second))

    def lose_pongs(self, count: int, which: Which = "pubsub", *, prefix: bytes = b"") -> None:
        """Remove the next ``count`` server pongs whose payload starts with ``prefix``
        on connections of this kind opened from now on (0: stop)."""
        if count < 0:
            raise ValueError(f"count: expected >= 0, got {count}")

        def apply(t: Toxics) -> None:
            t.pongs_to_lose, t.pong_prefix = count, prefix

        self._set_toxic(which, "lose_pongs", apply)

    def corrupt_frames(self, count: int, which: Which = "pubsub", *, after: int = 0) -> None:
        """Set RSV1 on ``count`` server data frames of connections of this kind
        opened from now on, once ``after`` more have passed (0: stop): a framing
        error the client must survive."""
        if count < 0 or after < 0:
            raise ValueError(f"count, after: expected >= 0, got {count}, {after}")

        def apply(t: Toxics) -> None:
            t.frames_to_corrupt, t.frames_to_pass = count, after

        self._set_toxic(which, "corrupt_frames", apply)

    def clear_toxics(self, which: Which = "all") -> None:
        """No latency, slicing or bandwidth cap any more."""
        def clear() -> None:
            for role in self._roles(which):
                self._toxics[role] = Toxics()

        self._call(clear)

    def refuse(self, seconds: float) -> None:
        """Stop accepting for ``seconds``: connects are refused; live connections go on."""
        if seconds <= 0:
            raise ValueError(f"seconds: expected > 0, got {seconds}")
        self._call(lambda: self._refuse(seconds))

    # --- observation (any thread) -----------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Faults applied, by kind (connections for reset/half_open/blackhole, calls else)."""
        return dict(self._call(lambda: dict(self._counts)))

    def connections(self, which: Which = "all", *, session_id: str | None = None) -> int:
        """Live proxied connections (open or blackholed) of this kind."""
        return int(self._call(lambda: sum(c.matches(which, session_id) for c in self._conns)))

    def stats(self) -> dict[str, int]:
        """Bytes forwarded each way, segments written by the slicer, pongs removed,
        frames corrupted, connections accepted."""
        return dict(self._call(lambda: {
            "accepted": self._accepted, "bytes_up": self._forwarded["up"],
            "bytes_down": self._forwarded["down"], "slices": self._slices,
            "pongs_lost": self._pongs_lost, "frames_corrupted": self._frames_corrupted,
            "forgotten_sockets": len(self._forgotten)}))

    # --- loop side ---------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                return await result
            return result

        coro = run()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the proxy was closed meanwhile: nothing to act on
            coro.close()
            raise
        return future.result(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _roles(self, which: Which) -> tuple[str, ...]:
        return ROLES if which == "all" else (which,)

    def _set_toxic(self, which: Which, kind: str, apply: Callable[[Toxics], None]) -> None:
        def run() -> None:
            self._counts[kind] += 1
            for role in self._roles(which):
                apply(self._toxics[role])
            log.info("toxic %s on %s connections: %s", kind, which,
                     {r: self._toxics[r] for r in self._roles(which)})

        self._call(run)

    async def _each(self, which: Which, session_id: str | None, kind: str | None,
                    action: Callable[[_Conn], Coroutine[Any, Any, None]]) -> int:
        matching = [c for c in self._conns if c.matches(which, session_id)]
        for conn in matching:
            await action(conn)
            if kind is not None:
                self._counts[kind] += 1
        if kind is not None:
            log.info("%s on %d %s connection(s)", kind, len(matching), which)
        return len(matching)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self._listener = sock
        self._accepting = self._spawn(self._accept(sock))

    async def _stop_listening(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        _close(self._listener)
        self._listener = None

    async def _refuse(self, seconds: float) -> None:
        self._counts["refuse"] += 1
        if self._listener is None:
            return
        await self._stop_listening()
        log.info("refusing connections for %.3fs", seconds)
        self._reopen = self._loop.call_later(seconds, lambda: self._spawn(self._listen()))

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            client, _ = await self._loop.sock_accept(listener)
            self._accepted += 1
            if len(self._conns) >= self.max_connections:
                log.info("connection limit (%d) reached: reset", self.max_connections)
                _reset(client)
                continue
            self._numbers += 1
            conn = _Conn(self._numbers, client)
            self._conns.add(conn)
            self._spawn(self._open(conn))

    async def _open(self, conn: _Conn) -> None:
        conn.client.setblocking(False)
        conn.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.upstream = upstream
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._loop.sock_connect(upstream, self.target)
        except (OSError, TimeoutError) as exc:
            log.info("upstream %s:%d unreachable (%s): client reset", *self.target, exc)
            await self._finish(conn, rst=True)
            return
        if conn.state != "connecting":  # closed meanwhile
            return
        conn.state = "open"
        conn.pumps = [self._spawn(self._pump(conn, "up")),
                      self._spawn(self._pump(conn, "down"))]

    async def _pump(self, conn: _Conn, direction: str) -> None:
        """One direction: a reader and a writer with a small queue between them."""
        up = direction == "up"
        assert conn.upstream is not None
        src, dst = (conn.client, conn.upstream) if up else (conn.upstream, conn.client)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        writer = self._spawn(self._write(conn, dst, queue, direction))
        try:
            while True:
                await conn.flowing.wait()
                data = await self._loop.sock_recv(src, CHUNK)
                if up and not conn.classified and data:
                    conn.sniff(data)
                    toxics = self._toxics[conn.role]
                    if conn.classified and (toxics.pongs_to_lose
                                            or toxics.frames_to_corrupt):
                        conn.frames = _FrameFilter(toxics, self._pong_lost,
                                                   self._frame_corrupted)
                if not up and conn.frames is not None and data:
                    data = conn.frames.feed(data)
                    if not data:
                        continue  # an incomplete frame: more must be read first
                await queue.put((self._loop.time(), data))
                if not data:
                    break
            await writer
        except asyncio.CancelledError:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            raise
        except OSError:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await writer
            self._spawn(self._finish(conn, rst=True))  # a reset passes through as a reset

    async def _write(self, conn: _Conn, dst: socket.socket,
                     queue: asyncio.Queue[tuple[float, bytes]], direction: str) -> None:
        try:
            while True:
                stamp, data = await queue.get()
                toxics = self._toxics[conn.role]
                if toxics.latency:
                    delay = stamp + toxics.latency - self._loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await conn.flowing.wait()
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)  # an orderly close passes through
                    conn.eof += 1
                    if conn.eof == 2:
                        self._spawn(self._finish(conn, rst=False))
                    return
                await self._send(dst, data, toxics)
                self._forwarded[direction] += len(data)
        except OSError:
            self._spawn(self._finish(conn, rst=True))

    async def _send(self, dst: socket.socket, data: bytes, toxics: Toxics) -> None:
        if toxics.slice_max:
            pieces: list[bytes] = []
            at = 0
            while at < len(data):
                size = self._rng.randint(toxics.slice_min, toxics.slice_max)
                pieces.append(data[at:at + size])
                at += size
        elif toxics.bandwidth:
            step = max(1, int(toxics.bandwidth / 50))  # pacing in ~20 ms steps
            pieces = [data[i:i + step] for i in range(0, len(data), step)]
        else:
            await self._loop.sock_sendall(dst, data)
            return
        for piece in pieces:
            started = self._loop.time()
            await self._loop.sock_sendall(dst, piece)
            if toxics.slice_max:
                self._slices += 1
                await asyncio.sleep(toxics.slice_delay)
            if toxics.bandwidth:
                wait = len(piece) / toxics.bandwidth - (self._loop.time() - started)
                if wait > 0:
                    await asyncio.sleep(wait)

    def _pong_lost(self) -> None:
        self._pongs_lost += 1

    def _frame_corrupted(self) -> None:
        self._frames_corrupted += 1

    async def _stop_pumps(self, conn: _Conn) -> None:
        current = asyncio.current_task()
        pumps = [p for p in conn.pumps if p is not current]
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump
        conn.pumps = []

    async def _finish(self, conn: _Conn, *, rst: bool) -> None:
        """The connection is over: stop its pumps, close (or reset) both sockets."""
        if conn.state in ("closed", "forgotten"):
            return
        conn.state = "closed"
        await self._stop_pumps(conn)
        for sock in (conn.client, conn.upstream):
            if rst:
                _reset(sock)
            else:
                _close(sock)
        self._conns.discard(conn)

    async def _reset_conn(self, conn: _Conn, side: Side) -> None:
        if side == "both":
            await self._finish(conn, rst=True)
            return
        conn.state = "forgotten"
        await self._stop_pumps(conn)
        gone, survivor = ((conn.client, conn.upstream) if side == "client"
                          else (conn.upstream, conn.client))
        _reset(gone)
        self._conns.discard(conn)
        assert survivor is not None
        self._spawn(self._outlive(survivor))

    async def _forget(self, conn: _Conn, side: str) -> None:
        conn.state = "forgotten"
        await self._stop_pumps(conn)
        gone, survivor = ((conn.client, conn.upstream) if side == "client"
                          else (conn.upstream, conn.client))
        assert gone is not None and survivor is not None
        self._conns.discard(conn)
        self._forgotten.append(gone)
        while len(self._forgotten) > self.max_connections:
            _close(self._forgotten.popleft())
        self._spawn(self._outlive(survivor))

    async def _outlive(self, survivor: socket.socket) -> None:
        """The side left behind hears nothing; when it gives up and closes, so do we."""
        try:
            while await self._loop.sock_recv(survivor, CHUNK):
                pass  # discarded: nothing is forwarded any more
        except OSError:
            pass
        finally:
            _close(survivor)

    async def _blackhole(self, conn: _Conn) -> None:
        conn.state = "blackhole"
        conn.flowing.clear()

    async def _heal(self, conn: _Conn) -> None:
        if conn.state == "blackhole":
            conn.state = "open"
            conn.flowing.set()

    async def _shutdown(self) -> None:
        """Every task stopped first (none is left waiting on a socket), then every socket."""
        if self._reopen is not None:
            self._reopen.cancel()
        await self._stop_listening()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        for conn in list(self._conns):
            conn.state = "closed"
            _close(conn.client)
            _close(conn.upstream)
        self._conns.clear()
        while self._forgotten:
            _close(self._forgotten.popleft())


__all__ = ["FAULT_KINDS", "FaultProxy", "Side", "Which"]
