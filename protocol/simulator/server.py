"""The simulator's network edge: a ``websockets`` asyncio server in its own thread.

Control connections at ``/backtest`` (``X-API-Key`` required), PubSub at
``/backtest/<session_id>``. PubSub is not authenticated, as in the real
service: the session id (a random UUID the server hands to the session's
owner) is the capability, so anyone who knows it may subscribe. All session
state and the rules about it (ownership, fencing, replay bounds, keepalive
verdicts) live in :mod:`protocol.simulator.engine`; this module only moves
frames, keeps time and applies faults. Everything runs on one event loop
thread, so no state is shared with other threads except through
:meth:`SimulatorServer.call_soon` / ``call``.

How the server treats its peers, as a real server must:

* **Dead peers.** Every connection is pinged when it has been idle for
  ``keepalive_interval`` and closed (close frame 1011, then TCP abort after
  ``close_timeout``) once nothing at all has come from it for
  ``keepalive_deadline``. A dead owner loses its session at that moment, so the
  client's re-attach succeeds; before that, a re-attach gets
  ``sessionOwnershipBusy``. No fault flag is consulted: a blackholed or
  half-open connection is found the way any silent peer is.
* **Slow peers.** Frames are written without waiting for the socket (never
  while holding a session's lock). After each step a session waits until every
  one of its connections is below websockets' write high-water mark (32 KiB):
  that is what keeps memory bounded and lets TCP flow control slow the session
  to its slowest reader, as actors/DESIGN.md §4 relies on. A reader that stops reading
  *and* stops talking is found dead at ``keepalive_deadline`` and closed at
  once (abort: a close frame would queue behind what it never read), which
  releases the session. A reader that keeps talking (its own pings count) but
  drains nothing holds the session for at most ``stall_timeout``, then it is
  closed as stalled (abort) and the session goes on.
* **A client that pauses reading** because its application is slow stops
  reading the server's pings too (websocket-client answers a ping only when its
  reader reads it; and a server ping queues behind everything already written
  to the peer, so a client catching up on a deep queue answers it only once it
  has read that far). If it keeps sending its own pings on its own schedule, as
  the actor client does, it is alive: the session waits for it (TCP flow
  control, nothing lost) for up to ``stall_timeout`` (local default 30 s, so an
  application pause shorter than that costs nothing). A client that sends
  nothing while paused is closed after ``keepalive_deadline``; one that drains
  nothing for ``stall_timeout`` is closed as stalled. Either way it reconnects
  and resumes with ``attach``/``replayFromSlot``: nothing is lost as long as it
  resumes within the replay buffers (the client keeps its session within
  ``PUBSUB_BUFFER_SLOTS`` of what its subscriptions confirmed; a continue larger
  than the buffer, made while the reader is stalled, can run past what a replay
  can give back).
* **Bounded state.** Finished sessions are freed; only their counters are kept,
  for the last :data:`STATS_HISTORY` of them (``/stats``, ``session_stats``).
  Replay logs and PubSub buffers are bounded (see the engine). Answers to
  invalid requests are neither sequenced nor logged.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import socket
import ssl
import struct
import sys
import threading
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..codec import (
    decode_pubsub_request,
    decode_request,
    encode_pubsub,
    encode_response,
    notification_frame,
)
from ..errors import ProtocolError
from ..messages import (
    Attach,
    AttachParallel,
    BacktestError,
    Close,
    CloseSession,
    ContinueParams,
    ContinueSession,
    ContinueToParams,
    CreateSession,
    Error,
    ParallelAttached,
    Resume,
    SessionAttached,
    SessionCreated,
    SessionEvent,
    SessionsCreated,
    SlotNotification,
    Success,
)
from ..policy import KEEPALIVE_INTERVAL, KEEPALIVE_MISS_DEADLINE
from ..pubsub import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ActionSubscribe,
    JsonRpcError,
    Subscribe,
    SubscribeAck,
    UnsubscribeAck,
)
from .chain import Chain
from .engine import (
    ACTIONS_KEY,
    ExecutedSlot,
    PeerLiveness,
    Session,
    SlotStep,
    Step,
    error_frame,
    refusal_frame,
)
from .faults import CountedFault, FaultCounters, Trigger
from .handshakes import ResumeHandshakes

log = logging.getLogger("protocol.simulator")

try:  # bytes in a TCP socket's send queue not yet acknowledged by the peer (Linux)
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ if sys.platform == "linux" else None
except ImportError:  # pragma: no cover - not POSIX
    _SIOCOUTQ = None


class _RedactApiKey(logging.Filter):
    """websockets logs every request header at DEBUG; the API key must never be."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() == "x-api-key":
            record.args = (args[0], "[redacted]")
        return True


# The websockets connections of this server log here, redacted.
wire_log = logging.getLogger("protocol.simulator.websockets")
wire_log.addFilter(_RedactApiKey())
T = TypeVar("T")

CONTROL_PATH = "/backtest"
SESSION_PATH_PREFIX = "/backtest/"
STATS_HISTORY = 1000  # finished sessions whose counters are kept (oldest dropped first)

LOCAL_KEEPALIVE_INTERVAL = 1.0
LOCAL_KEEPALIVE_DEADLINE = 3.0
LOCAL_STALL_TIMEOUT = 30.0


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name}: expected > 0, got {value}")


@attrs.frozen
class ServerLiveness:
    """How the server finds dead and stalled peers.

    Knobs: ``keepalive_interval=1`` (seconds idle before a ping; each costs a
    frame each way), ``keepalive_deadline=3`` (seconds of silence after which a
    peer is dead and loses the session it owns), ``stall_timeout=30`` (a reader
    that drains nothing this long is closed), ``close_timeout=1`` (a closing
    connection's time to answer the close frame).

    The local defaults are short (ping after 1 s idle, dead after 3 s of
    silence) so that tests and the embedded simulator see a vanished client in
    seconds. A real server uses the client's defaults, ``KEEPALIVE_INTERVAL``
    (15 s) and ``KEEPALIVE_MISS_DEADLINE`` (45 s) from :mod:`protocol.policy`:
    :data:`REAL_SERVER_LIVENESS`. A client's reconnect policy must outlive the
    server's deadline, since a re-attach is answered ``sessionOwnershipBusy``
    until the server has found the old connection dead.

    ``stall_timeout`` bounds how long a session waits for a reader that is
    alive (it keeps sending, e.g. pings) but drains nothing of what it is sent
    (a reader that drains, however slowly, is waited for); then that reader is
    closed and the session goes on. It is longer than the
    deadline by default (30 s) because a client whose application pauses
    reading is alive and loses nothing by waiting (actors/DESIGN.md §4: TCP flow
    control slows the server); set it to the deadline for "no reader may hold a
    session longer than the keepalive deadline". A reader that stops talking is
    closed at the deadline whatever this says. ``close_timeout`` is how long a
    connection being closed gets to answer the close frame before its TCP
    connection is aborted.
    """

    keepalive_interval: float = attrs.field(default=LOCAL_KEEPALIVE_INTERVAL,
                                            validator=_positive)
    keepalive_deadline: float = attrs.field(default=LOCAL_KEEPALIVE_DEADLINE,
                                            validator=_positive)
    stall_timeout: float = attrs.field(default=LOCAL_STALL_TIMEOUT, validator=_positive)
    close_timeout: float = attrs.field(default=1.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.keepalive_deadline <= self.keepalive_interval:
            raise ValueError(f"keepalive_deadline ({self.keepalive_deadline}) must exceed "
                             f"keepalive_interval ({self.keepalive_interval})")

    @property
    def tick(self) -> float:
        """How often the keepalive sweep runs: a dead peer is found by deadline + tick."""
        return min(self.keepalive_interval / 2, self.keepalive_deadline / 8, 1.0)


REAL_SERVER_LIVENESS = ServerLiveness(KEEPALIVE_INTERVAL, KEEPALIVE_MISS_DEADLINE)


class _LiveConnection(ServerConnection):
    """A server connection that remembers when its peer last sent anything."""

    last_inbound: float = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.last_inbound = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_inbound = self.loop.time()
        super().data_received(data)


class _Blackhole(asyncio.Transport):
    """The network stopped carrying anything, both ways (the ``blackhole`` fault).

    Installed in place of a connection's transport: every write (frames,
    answers to the peer's pings, the server's own keepalive pings, a close
    frame, EOF) is swallowed and reading stays paused, even when websockets'
    flow control would resume it. The keepalive and ownership rules are not
    told anything: they find the silence as a real server would. Closing or
    aborting still reaches the socket, so when the server gives up on the
    connection the peer sees the FIN or RST that a healed network would carry.
    """

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self._inner = inner
        inner.pause_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return False

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


@attrs.define(eq=False)
class Peer:
    """One accepted WebSocket connection and what the server knows about it.

    Writes never wait for the socket: frames go to the transport's buffer at
    once (in order, since everything runs on one loop), and the caller decides
    when and how long to wait for that buffer to drain (:meth:`SimulatorServer._drain`).
    """

    ws: _LiveConnection
    role: str  # "control" or "pubsub"
    liveness: PeerLiveness
    session_id: str | None = None
    subs: dict[tuple[str, str], list[int]] = attrs.field(factory=dict)
    api_key: str = attrs.field(default="", repr=False)  # never logged
    pings: int = 0

    @property
    def dead(self) -> bool:
        return self.liveness.dead

    @property
    def kinds(self) -> set[str]:
        return {kind for kind, _ in self.subs}

    @property
    def writable(self) -> bool:
        return self.ws.protocol.state is State.OPEN and not self.ws.transport.is_closing()

    def matches(self, target: str, session_id: str | None) -> bool:
        if session_id is not None and self.session_id != session_id:
            return False
        if target == "all":
            return True
        if target == "control":
            return self.role == "control"
        if self.role != "pubsub":
            return False
        return target == "subscriptions" or target in self.kinds

    def unacknowledged(self) -> int:
        """Bytes written but not yet acknowledged by the peer's TCP: what it has not taken.

        The transport's buffer alone is not enough: it also shrinks when the
        kernel's send buffer grows (autotuning), while a peer that reads nothing
        acknowledges nothing. On Linux the kernel's unacknowledged bytes
        (``SIOCOUTQ``) are added; elsewhere the transport's buffer has to do.
        """
        pending = self.ws.transport.get_write_buffer_size()
        sock = self.ws.transport.get_extra_info("socket")
        if _SIOCOUTQ is not None and sock is not None:
            try:
                raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
                pending += int.from_bytes(raw, sys.byteorder, signed=True)
            except OSError:
                pass
        return pending

    def write(self, frames: Iterable[str]) -> int:
        """Queue text frames in one socket write; how many were queued (0 if closing).

        One ``send()`` per frame costs a syscall each and capped the stream near
        13k frames/s; framing through the sans-I/O protocol object and writing
        the joined bytes once is what lets the simulator outrun any client.
        """
        if not self.writable:
            return 0
        protocol = self.ws.protocol
        count = 0
        for frame in frames:
            protocol.send_text(frame.encode())
            count += 1
        self._flush()
        return count

    def write_frame(self, frame: str | bytes) -> bool:
        """One frame (bytes go as a binary frame); False if the connection is closing."""
        if not self.writable:
            return False
        if isinstance(frame, bytes):
            self.ws.protocol.send_binary(frame)
        else:
            self.ws.protocol.send_text(frame.encode())
        self._flush()
        return True

    def ping(self) -> None:
        """A keepalive ping, written at once (never waits behind a full buffer)."""
        if self.writable:
            self.pings += 1
            self.ws.protocol.send_ping(struct.pack("!I", self.pings))
            self._flush()

    def _flush(self) -> None:
        chunks = self.ws.protocol.data_to_send()
        data = b"".join(chunks)
        if data:
            self.ws.transport.write(data)
        if any(not chunk for chunk in chunks):  # an EOF marker: let websockets handle it
            self.ws.send_data()

    def close(self, code: int, reason: str, grace: float) -> None:
        """Close frame now, TCP abort after ``grace`` unless the peer closed by then."""
        if self.writable:
            self.ws.protocol.send_close(code, reason)
            self._flush()
        loop = self.ws.loop
        loop.call_later(grace, self.drop)

    def drop(self) -> None:
        """Abrupt close: TCP reset, no close frame (a no-op once closed)."""
        if self.ws.protocol.state is not State.CLOSED:
            self.ws.transport.abort()

    def blackhole(self) -> None:
        if not isinstance(self.ws.transport, _Blackhole):
            self.ws.transport = _Blackhole(self.ws.transport)


@attrs.define(eq=False)
class SessionState:
    session: Session
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    subscribers: set[Peer] = attrs.field(factory=set)
    expiry: asyncio.TimerHandle | None = None
    next_sub_id: int = 1
    notifications_sent: int = 0

    @property
    def owner(self) -> Peer | None:
        """The owner's connection, while it is alive."""
        owner = self.session.owner
        if isinstance(owner, Peer) and not owner.dead:
            return owner
        return None

    def peers(self) -> list[Peer]:
        owner = self.owner
        return [*self.subscribers, *([owner] if owner is not None else [])]


# Slots per sub-session of a parallel create (the last one may be shorter).
DEFAULT_PARALLEL_SPLIT = 250


@attrs.define(eq=False)
class ParallelGroup:
    """A parallel create's sub-sessions, driven over one control connection.

    Each member is a session of its own (own sequence, replay log, PubSub
    endpoint, ownership); the group only names them together, for the attach that
    re-takes them all and for the connection that drives them.
    """

    id: str
    api_key: str
    members: dict[str, SessionState]  # in range order


@attrs.frozen
class ServerLimits:
    """What the simulator accepts from a client: it is a server users will run.

    Knobs: ``max_frame_size=1048576`` (bytes; a larger frame closes the
    connection with 1009; memory per connection is bounded by it),
    ``max_connections_per_client=256`` (live connections per client address;
    more are refused with 503), ``handshake_timeout=10`` (seconds for an open
    TCP connection to complete its upgrade).
    """

    max_frame_size: int = 2**20  # bytes; a larger frame closes the connection (1009)
    max_connections_per_client: int = 256  # live WebSocket connections per client address
    handshake_timeout: float = 10.0  # TCP open but no complete upgrade: closed after this


def _client_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"


@attrs.frozen
class SessionStats:
    """The server's view of one session (``LocalSimulator.session_stats``): what it
    received and ran. ``continues_received`` counts ``continue`` and ``continueTo``
    alike; ``blocks_executed`` only whole blocks (a partly run block counts when it
    ends). ``user_transactions``: transactions injected with continues;
    ``injected_transactions``: the last 64 of them, base64 as received (each runs
    where it was injected, and a subscription sees one made with
    ``protocol.simulator.chain.user_transaction``). ``pauses``: ``paused`` answers;
    ``discoveries``: ``discoveryBatch`` announcements."""

    session_id: str
    continues_received: int
    blocks_executed: int
    completed: bool
    owner_connected: bool
    subscribers: int
    notifications_sent: int
    commands_refused: int = 0  # commands from a connection without ownership (fenced)
    replay_log_entries: int = 0  # sequenced responses kept for an attach to replay
    user_transactions: int = 0
    injected_transactions: tuple[str, ...] = ()
    pauses: int = 0
    discoveries: int = 0


@attrs.define
class LivenessCounters:
    """What the server's keepalive and flow control did, for tests and the soak."""

    pings: int = 0  # keepalive pings written
    dead: int = 0  # connections closed after keepalive_deadline of silence
    stalled: int = 0  # connections closed because they did not drain within the deadline
    owners_lost: int = 0  # sessions whose owner was found dead (ownership released)
    commands_refused: int = 0  # control commands fenced off (connection without ownership)

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class SimulatorServer:
    """Owns the event loop thread, the listening socket and every session."""

    def __init__(self, chain: Chain, api_key: str, host: str, port: int, *,
                 limits: ServerLimits | None = None,
                 liveness: ServerLiveness | None = None,
                 extra_api_keys: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None,
                 parallel_split: int = DEFAULT_PARALLEL_SPLIT) -> None:
        self.chain = chain
        self.api_key = api_key
        self.parallel_split = parallel_split
        self.groups: dict[str, ParallelGroup] = {}
        self.api_keys = frozenset((api_key, *extra_api_keys))
        self.limits = limits or ServerLimits()
        self.liveness = liveness or ServerLiveness()
        self.ssl_context = ssl_context
        self.connections_by_client: dict[str, int] = defaultdict(int)
        self.host = host
        self.port = port
        self.sessions: dict[str, SessionState] = {}
        # Finished sessions: counters only, the last STATS_HISTORY of them.
        self.retired: OrderedDict[str, SessionStats] = OrderedDict()
        self.peers: set[Peer] = set()
        self.triggers: list[Trigger] = []  # connection faults aimed at a moment
        self.handshake_delays: list[CountedFault] = []
        self.http_faults: list[CountedFault] = []
        self.lose_continue: list[str | None] = []
        self.failing: dict[str, str] = {}  # session id -> the error its next continue gets
        self.fault_counts = FaultCounters()
        self.liveness_counts = LivenessCounters()
        self.resume_handshakes = ResumeHandshakes()
        self.upgrade_requests: dict[str, int] = defaultdict(int)
        self.fault_counts_limits: dict[str, int] = defaultdict(int)
        self._servers: list[Server] = []
        self._listening: Server | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="local-simulator", daemon=True)

    # --- lifecycle (called from the owner's thread) -----------------------------

    def start(self) -> None:
        self._thread.start()
        self.call(self._listen)
        self.call_soon(lambda: self._spawn(self._keepalive()))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def call_soon(self, fn: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(fn)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the loop thread and return its result (awaiting it if needed)."""

        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    async def _listen(self) -> None:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only
        # when it is given; without it Nagle + delayed ACK added 40 ms to small answers.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = await serve(
            self._handle, sock=sock, process_request=self._process_request,
            # Keepalive is this server's own (_keepalive): one sweep for every
            # connection, "silent for the deadline" as the client defines it, and
            # pings that never wait behind a full buffer.
            ping_interval=None, create_connection=_LiveConnection,
            compression=None, close_timeout=self.liveness.close_timeout, server_header=None,
            ssl=self.ssl_context,
            # A client that opens TCP and never finishes the upgrade is closed.
            open_timeout=self.limits.handshake_timeout,
            max_size=self.limits.max_frame_size, logger=wire_log,
        )
        self._servers.append(server)
        self._listening = server

    def refuse(self, seconds: float) -> None:
        self.fault_counts.refuse += 1
        if self._listening is not None:
            self._listening.server.close()  # stop accepting; live connections go on
            self._listening = None
            log.info("refusing connections for %.3fs", seconds)
            self._reopen = self._loop.call_later(seconds, lambda: self._spawn(self._listen()))

    async def _shutdown(self) -> None:
        self._stopping.set()
        if self._reopen is not None:
            self._reopen.cancel()
        for state in self.sessions.values():
            if state.expiry:
                state.expiry.cancel()
        for peer in list(self.peers):
            peer.drop()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close(close_connections=False)
        for server in self._servers:
            await server.wait_closed()
        self.sessions.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- statistics (call through ``call``) --------------------------------------

    def session_stats(self, session_id: str) -> SessionStats:
        """Counters of a live session, or of one of the last finished ones (else KeyError)."""
        state = self.sessions.get(session_id)
        if state is None:
            return self.retired[session_id]
        s = state.session
        return SessionStats(session_id, s.continues_received, s.blocks_executed, s.completed,
                            s.owner_alive, len(state.subscribers), state.notifications_sent,
                            s.commands_refused, len(s.log), s.user_transactions,
                            tuple(s.injected), s.pauses, s.discoveries_sent)

    # --- keepalive and flow control ----------------------------------------------

    async def _keepalive(self) -> None:
        """One sweep over every connection: ping the idle, close the silent."""
        tick = self.liveness.tick
        while True:
            await asyncio.sleep(tick)
            now = self._loop.time()
            for peer in list(self.peers):
                peer.liveness.inbound(peer.ws.last_inbound)
                verdict = peer.liveness.check(now)
                if verdict == "ping":
                    self.liveness_counts.pings += 1
                    peer.ping()
                elif verdict == "dead":
                    self._found_dead(peer, now - peer.liveness.last_inbound)

    def _found_dead(self, peer: Peer, silent: float) -> None:
        self.liveness_counts.dead += 1
        log.info("%s connection (session %s) silent for %.2fs: closed as dead", peer.role,
                 peer.session_id, silent)
        state = self.sessions.get(peer.session_id) if peer.session_id else None
        group = self.groups.get(peer.session_id) if peer.session_id else None
        if peer.role == "control":
            # Ownership goes at once, not when the close completes: the client's
            # re-attach must not wait for a dead peer's close handshake.
            for member in _members(group or state):
                self._lose_owner(member, peer, "owner found dead")
        if peer.ws.paused:  # a close frame would queue behind what it never read
            peer.drop()
        else:
            peer.close(CloseCode.INTERNAL_ERROR, "keepalive deadline missed",
                       self.liveness.close_timeout)

    async def _drain(self, peers: Iterable[Peer]) -> None:
        """Wait until each peer is below its write high-water mark.

        A peer whose buffer does not shrink at all for ``stall_timeout`` is closed
        as stalled (abort: a graceful close frame would queue behind what it does
        not read); one that drains, however slowly, is waited for: it is slow, not
        stuck, and the session goes at its pace. Its draining also counts as a sign
        of life: a handler waiting here reads nothing from that peer, so its own
        frames would not be seen. One that dies meanwhile is
        aborted by the keepalive, which ends the wait at once. The peers are
        waited for together. Callers hold no session lock, except a subscribe
        replaying its buffer.
        """
        slow = [peer for peer in peers if peer.ws.paused and peer.writable]
        if len(slow) == 1:
            await self._drain_one(slow[0])
        elif slow:
            await asyncio.gather(*(self._drain_one(peer) for peer in slow))

    async def _drain_one(self, peer: Peer) -> None:
        step = min(self.liveness.tick, self.liveness.stall_timeout)
        size = peer.unacknowledged()
        progress_at = self._loop.time()
        while peer.ws.paused and peer.writable:
            try:
                async with asyncio.timeout(step):
                    await peer.ws.drain()
                return
            except TimeoutError:
                now_size = peer.unacknowledged()
                if now_size < size:
                    progress_at = self._loop.time()
                    # Its TCP acknowledged what it read: proof of life, even though
                    # nothing is read from it while this server waits here.
                    peer.liveness.inbound(progress_at)
                size = now_size
                if self._loop.time() - progress_at >= self.liveness.stall_timeout:
                    if not peer.dead:  # a dead one is being closed already: counted there
                        self.liveness_counts.stalled += 1
                        log.info("%s connection (session %s) drained nothing for %.1fs: "
                                 "closed", peer.role, peer.session_id,
                                 self.liveness.stall_timeout)
                    peer.drop()
                    return
            except (ConnectionError, OSError, ConnectionClosed):
                return  # lost while waiting: its handler cleans up

    # --- faults -------------------------------------------------------------------

    def apply_fault(self, trigger: Trigger) -> None:
        # A sub-session of a parallel group has no control connection of its own: a
        # control fault aimed at it hits the group's (and so its siblings too).
        control_of = {sid: group.id for group in self.groups.values() for sid in group.members}
        for peer in [p for p in self.peers if p.matches(trigger.target, trigger.session_id) or (
                p.role == "control" and trigger.target in ("control", "all")
                and control_of.get(trigger.session_id or "") == p.session_id)]:
            log.info("fault %s on %s connection (session %s)", trigger.kind, peer.role,
                     peer.session_id)
            if trigger.kind == "drop":
                self.fault_counts.drop += 1
                peer.drop()
            elif trigger.kind == "blackhole":
                self.fault_counts.blackhole += 1
                peer.blackhole()
            else:
                self.fault_counts.malformed += 1
                peer.write_frame(trigger.frame)

    def _fail_if_asked(self, state: SessionState) -> bool:
        """``faults.fail_session``: answer this continue with a terminal error, end it."""
        kind = self.failing.pop(state.session.id, None)
        if kind is None:
            return False
        self.fault_counts.fail_session += 1
        self._emit(state, error_frame(state.session, BacktestError(kind, {
            "slot": state.session.pending_slots[0] if state.session.pending_slots else 0})))
        self._remove(state, f"failed on purpose ({kind})")
        return True

    def _take_lost_continue(self, session_id: str) -> bool:
        for wanted in self.lose_continue:
            if wanted in (None, session_id):
                self.lose_continue.remove(wanted)
                self.fault_counts.lose_continue += 1
                log.info("fault: continue of session %s lost with its connection", session_id)
                return True
        return False

    def arm(self, trigger: Trigger) -> str | None:
        """Arm an aimed fault, or say why its moment can never come (nothing armed)."""
        problem = self._unreachable(trigger)
        if problem is None:
            self.triggers.append(trigger)
        return problem

    def _unreachable(self, trigger: Trigger) -> str | None:
        moment, number = trigger.moment, trigger.number
        produced = self.chain.produced
        if moment == "slot":
            first, last = self.chain.available_range()
            if not first <= number <= last:
                return (f"at_slot: slot {number} is outside the chain's range "
                        f"{first}..={last}; the fault would never fire")
            if number not in self.chain.produced_set:
                index = bisect.bisect_left(produced, number)
                near = produced[max(0, index - 1):index + 1]
                return (f"at_slot: slot {number} has no block (a skipped slot), so no "
                        f"session executes it and the fault would never fire; produced "
                        f"slots around it: {', '.join(map(str, near))}")
        elif number < 1:
            return f"at_{moment}: expected a number >= 1 (the first is 1), got {number}"
        elif number > len(produced) - 1:
            return (f"at_{moment}: {number} is more than the {len(produced) - 1} blocks a "
                    f"session on this chain can execute; the fault would never fire")
        if trigger.session_id is None:
            return None
        state = self.sessions.get(trigger.session_id)
        if state is None:
            return (f"session_id: no session {trigger.session_id!r} on this simulator "
                    f"(the fault would never fire)")
        session = state.session
        if moment == "slot":
            if number not in session.pending_slots:
                return (f"at_slot: session {session.id} will not execute slot {number} "
                        f"(its range is {session.create.start_slot}..="
                        f"{session.create.end_slot}, the start slot is not executed, "
                        f"and {len(session.pending_slots)} blocks are left to run)")
            return None
        done = session.blocks_executed if moment == "block" else session.continues_received
        # Each continue executes at least one block, so both are bounded by the blocks left.
        reachable = done + len(session.pending_slots)
        if not done < number <= reachable:
            what = "blocks executed" if moment == "block" else "continues received"
            return (f"at_{moment}: session {session.id} can never reach {moment} {number} "
                    f"({done} {what} so far, at most {reachable} in its range)")
        return None

    def _fire_triggers(self, session_id: str, moment: str, number: int) -> None:
        due = [t for t in self.triggers if t.moment == moment and t.number == number
               and t.session_id in (None, session_id)]
        for trigger in due:
            self.triggers.remove(trigger)
            self.apply_fault(attrs.evolve(trigger, session_id=session_id))

    async def _handshake_delay(self, role: str, kind: str | None, session_id: str | None
                               ) -> None:
        for fault in self.handshake_delays:
            if _counted_matches(fault, role, kind, session_id):
                fault.count -= 1
                if fault.count <= 0:
                    self.handshake_delays.remove(fault)
                self.fault_counts.delay_handshake += 1
                log.info("delaying %s handshake answer by %.3fs", role, fault.value)
                try:  # a stopping server does not wait out an injected delay
                    await asyncio.wait_for(self._stopping.wait(), fault.value)
                except TimeoutError:
                    pass
                return

    # --- HTTP upgrade -------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request
                         ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._http(connection, path)
        role = "control" if path == CONTROL_PATH else "pubsub"
        self.upgrade_requests[role] += 1
        client = _client_of(connection)
        if self.connections_by_client[client] >= self.limits.max_connections_per_client:
            self.fault_counts_limits["connection_limit"] += 1
            log.info("upgrade refused: %s has %d connections", client,
                     self.connections_by_client[client])
            return connection.respond(429, "too many connections from this client\n")
        for fault in self.http_faults:
            if _counted_matches(fault, role, None, None):
                fault.count -= 1
                if fault.count <= 0:
                    self.http_faults.remove(fault)
                self.fault_counts.http_status += 1
                return connection.respond(int(fault.value), "injected fault\n")
        if role == "control":
            if request.headers.get("X-API-Key") not in self.api_keys:
                log.info("control upgrade rejected: missing or wrong API key")
                return connection.respond(401, "missing or invalid X-API-Key\n")
            return None
        # PubSub: no key, as in the real service; knowing the session id is enough.
        if not path.startswith(SESSION_PATH_PREFIX) or (
                path[len(SESSION_PATH_PREFIX):] not in self.sessions):
            return connection.respond(404, "no such session\n")
        return None

    def _http(self, connection: ServerConnection, path: str) -> Response:
        """Plain HTTP: ``/health``, ``/available-ranges`` and (local only) ``/stats``."""
        if path == "/health":
            return connection.respond(200, "ok")
        if path == "/available-ranges":
            first, last = self.chain.available_range()
            body: Any = [{"bundleStartSlot": first, "maxBundleEndSlot": last}]
        elif path == "/stats":
            body = {sid: attrs.asdict(self.session_stats(sid))
                    for sid in [*self.retired, *self.sessions]}
        else:
            return connection.respond(404, "not found\n")
        response = connection.respond(200, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _LiveConnection)
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        client = _client_of(ws)
        self.connections_by_client[client] += 1
        try:
            if path == CONTROL_PATH:
                await self._control(ws)
            else:
                await self._pubsub(ws, path[len(SESSION_PATH_PREFIX):])
        finally:
            self.connections_by_client[client] -= 1
            if not self.connections_by_client[client]:
                del self.connections_by_client[client]

    def _peer(self, ws: _LiveConnection, role: str, session_id: str | None = None,
              api_key: str = "") -> Peer:
        clock = PeerLiveness(self.liveness.keepalive_interval,
                             self.liveness.keepalive_deadline, ws.last_inbound)
        peer = Peer(ws, role, clock, session_id, api_key=api_key)
        self.peers.add(peer)
        return peer

    # --- control channel ---------------------------------------------------------

    async def _control(self, ws: _LiveConnection) -> None:
        peer = self._peer(ws, "control", api_key=ws.request.headers.get("X-API-Key", "")
                          if ws.request else "")
        log.info("control connection from %s", ws.remote_address)
        state: SessionState | ParallelGroup | None = None
        opened: float | None = self._loop.time()
        try:
            async for frame in ws:
                resume = opened is not None and _is_attach(frame)
                state = await self._control_frame(peer, state, frame)
                if resume and opened is not None:
                    self.resume_handshakes.record(opened, self._loop.time())
                opened = None
                await self._drain([peer])  # a client that does not read its answers waits
        except ConnectionClosed:
            pass
        finally:
            peer.liveness.close()
            self.peers.discard(peer)
            log.info("control connection closed (session %s)", peer.session_id)
            for member in _members(state):
                self._lose_owner(member, peer, "control connection closed")

    async def _control_frame(self, peer: Peer, state: SessionState | ParallelGroup | None,
                             frame: str | bytes) -> SessionState | ParallelGroup | None:
        try:
            request = decode_request(frame)
        except ProtocolError as exc:
            peer.write_frame(refusal_frame(BacktestError("invalidRequest", {"error": str(exc)})))
            return state
        if isinstance(request, CreateSession):
            if state is not None:
                peer.write_frame(refusal_frame(BacktestError(
                    "invalidRequest", {"error": "a session is already bound to this connection"})))
                return state
            if request.parallel:
                return await self._create_parallel(peer, request)
            return await self._create(peer, request)
        if isinstance(request, AttachParallel):
            return await self._attach_parallel(peer, state, request)
        if isinstance(state, ParallelGroup):
            return self._parallel_frame(peer, state, request)
        session = state.session if state else None
        if isinstance(request, Attach):
            return await self._attach(peer, state, request)
        if state is None or session is None:
            peer.write_frame(refusal_frame(BacktestError(
                "invalidRequest", {"error": "no session on this connection"})))
            return state
        refusal = session.authorize(peer)
        if refusal is not None:
            self.liveness_counts.commands_refused += 1
            log.info("session %s: %s from a connection without ownership refused", session.id,
                     type(request).__name__)
            peer.write_frame(refusal_frame(refusal))
            return state
        if isinstance(request, ContinueParams | ContinueToParams):
            self._continue(peer, state, request)
        elif isinstance(request, Resume):
            peer.write_frame(encode_response(Success()))
        elif isinstance(request, Close):
            peer.write_frame(encode_response(Success()))
            self._remove(state, "closed by client")
            return None
        return state

    async def _create(self, peer: Peer, request: CreateSession) -> SessionState | None:
        session, error = Session.open(request, peer.api_key, self.chain)
        if session is None:
            assert error is not None
            peer.write_frame(error_frame(None, error))
            return None
        refusal = session.attach(peer)
        if refusal is not None:  # the connection was found dead meanwhile
            peer.write_frame(refusal_frame(refusal))
            return None
        state = SessionState(session)
        self.sessions[session.id] = state
        peer.session_id = session.id
        log.info("session %s created for slots %d..=%d", session.id, request.start_slot,
                 request.end_slot)
        await self._handshake_delay("control", None, session.id)
        self._spawn(self._run(state, session.startup()))
        return state

    async def _attach(self, peer: Peer, state: SessionState | ParallelGroup | None,
                      request: Attach) -> SessionState | ParallelGroup | None:
        target = self.sessions.get(request.session_id)
        if target is None:
            peer.write_frame(refusal_frame(BacktestError(
                "sessionNotFound", {"session_id": request.session_id})))
            return state
        if target.session.api_key != peer.api_key:
            peer.write_frame(refusal_frame(BacktestError("sessionOwnerMismatch")))
            return state
        refusal = target.session.attach_refusal(peer)
        if refusal is not None:
            peer.write_frame(refusal_frame(refusal))
            return state
        await self._handshake_delay("control", None, request.session_id)
        if self.sessions.get(request.session_id) is not target:  # expired meanwhile
            peer.write_frame(refusal_frame(BacktestError(
                "sessionNotFound", {"session_id": request.session_id})))
            return state
        async with target.lock:
            # Decided again under the lock: the owner may have come back, or
            # another attach won, or this connection died, during the delay.
            refusal = target.session.attach(peer)
            if refusal is not None:
                peer.write_frame(refusal_frame(refusal))
                return state
            if target.expiry is not None:
                target.expiry.cancel()
                target.expiry = None
            for member in _members(state):
                if member is not target:
                    self._lose_owner(member, peer, "its connection attached to another session")
            # Handshake answers are per connection, not session events: not sequenced.
            s = target.session
            peer.write([encode_response(SessionAttached(s.id, f"/backtest/{s.id}")),
                        *s.replay_after(request.last_sequence)])
            peer.session_id = s.id
        log.info("session %s attached after sequence %s", s.id, request.last_sequence)
        return target

    # --- parallel sessions -------------------------------------------------------

    async def _create_parallel(self, peer: Peer, request: CreateSession) -> ParallelGroup | None:
        """Split the range into sub-sessions of ``parallel_split`` slots, each a session of
        its own owned by this connection: one ``sessionCreated`` each, then
        ``sessionsCreatedV2``, then their events as ``sessionEventV2`` (a sub-range
        without a produced block is left out)."""
        members: dict[str, SessionState] = {}
        low = request.start_slot
        while low <= request.end_slot:
            high = min(request.end_slot, low + self.parallel_split - 1)
            sub, _ = Session.open(attrs.evolve(request, start_slot=low, end_slot=high,
                                               parallel=False), peer.api_key, self.chain)
            low = high + 1
            if sub is None:
                continue
            sub.multiplexed = True
            sub.attach(peer)
            members[sub.id] = self.sessions[sub.id] = SessionState(sub)
        if not members:
            peer.write_frame(error_frame(None, BacktestError("noProducedBlocksInRange", {
                "start_slot": request.start_slot, "end_slot": request.end_slot})))
            return None
        group = ParallelGroup(f"parallel_{uuid.uuid4()}", peer.api_key, members)
        self.groups[group.id] = group
        peer.session_id = group.id
        subs = [m.session for m in members.values()]
        peer.write([*(encode_response(SessionCreated(s.id, f"/backtest/{s.id}")) for s in subs),
                    encode_response(SessionsCreated(
                        group.id, tuple(s.id for s in subs), tuple(None for _ in subs),
                        tuple(s.create.start_slot for s in subs),
                        tuple(s.create.end_slot for s in subs)))])
        log.info("parallel session %s created: %d sub-sessions", group.id, len(members))
        await self._handshake_delay("control", None, group.id)
        for member in members.values():
            self._spawn(self._run(member, member.session.multiplexed_startup()))
        return group

    async def _attach_parallel(self, peer: Peer, state: SessionState | ParallelGroup | None,
                               request: AttachParallel) -> SessionState | ParallelGroup | None:
        """Take every live sub-session of the group, replaying each after its cursor."""
        group = self.groups.get(request.control_session_id)
        if group is None:
            peer.write_frame(refusal_frame(BacktestError(
                "sessionNotFound", {"session_id": request.control_session_id})))
            return state
        if group.api_key != peer.api_key:
            peer.write_frame(refusal_frame(BacktestError("sessionOwnerMismatch")))
            return state
        await self._handshake_delay("control", None, group.id)
        live = [m for m in group.members.values() if self.sessions.get(m.session.id) is m]
        refusal = next((r for m in live if (r := m.session.attach_refusal(peer))), None)
        if refusal is not None:
            peer.write_frame(refusal_frame(refusal))
            return state
        for member in live:  # no await from here on: taken all at once
            member.session.attach(peer)
            if member.expiry is not None:
                member.expiry.cancel()
                member.expiry = None
        peer.write([encode_response(ParallelAttached(group.id,
                                                     tuple(m.session.id for m in live),
                                                     tuple(None for _ in live))),
                    *(frame for m in live for frame in m.session.replay_after(
                        request.last_sequences.get(m.session.id)))])
        peer.session_id = group.id
        log.info("parallel session %s attached (%d live sub-sessions)", group.id, len(live))
        return group

    def _parallel_frame(self, peer: Peer, group: ParallelGroup, request: Any
                        ) -> ParallelGroup | None:
        """A request on a connection that drives a parallel group."""
        if isinstance(request, Resume):
            peer.write_frame(encode_response(Success()))
            return group
        if isinstance(request, Close):
            peer.write_frame(encode_response(Success()))
            for member in list(group.members.values()):
                self._remove(member, "closed by client")
            return None
        if not isinstance(request, ContinueSession | CloseSession):
            peer.write_frame(refusal_frame(BacktestError("invalidRequest", {
                "error": f"{type(request).__name__} on a parallel control connection: "
                         f"address a sub-session (continueSessionV1, closeSessionV1)"})))
            return group
        found = group.members.get(request.session_id)
        if found is None:
            peer.write_frame(refusal_frame(BacktestError("invalidRequest", {
                "error": f"unknown sub-session {request.session_id!r} of {group.id}"})))
            return group
        if self.sessions.get(request.session_id) is not found:
            # Gone (closed, failed, expired): said to that sub-session, not sequenced.
            peer.write_frame(encode_response(SessionEvent(request.session_id, None, Error(
                BacktestError("sessionNotFound", {"session_id": request.session_id})))))
            return group
        member = found
        session = member.session
        refusal = session.authorize(peer)
        if refusal is not None:
            self.liveness_counts.commands_refused += 1
            peer.write_frame(refusal_frame(refusal))
            return group
        if isinstance(request, CloseSession):
            peer.write_frame(encode_response(SessionEvent(session.id, None, Success())))
            self._remove(member, "closed by client")
            return group
        self._continue(peer, member, request.params)
        return group

    def _continue(self, peer: Peer, state: SessionState,
                  params: ContinueParams | ContinueToParams) -> None:
        """A continue or continue-to from the session's owner (single or sub-session)."""
        session = state.session
        if self._take_lost_continue(session.id):
            peer.drop()
            return
        if self._fail_if_asked(state):
            return
        if isinstance(params, ContinueParams):
            refusal = session.check_continue()
        else:
            refusal = session.check_continue_to(params)
        if refusal is not None:
            peer.write_frame(error_frame(session, refusal))
            return
        self._spawn(self._run(state, session.run_continue(params)
                              if isinstance(params, ContinueParams)
                              else session.run_continue_to(params)))
        # Accepted, not yet answered: the answers are what a drop here loses.
        self._fire_triggers(session.id, "continue", session.continues_received)

    def _lose_owner(self, state: SessionState, peer: Peer, reason: str) -> None:
        """``peer`` no longer owns ``state``'s session (if it did): orphan the session."""
        if not state.session.release(peer) or state.session.id not in self.sessions:
            return
        if reason == "owner found dead":
            self.liveness_counts.owners_lost += 1
        timeout = state.session.create.disconnect_timeout_secs
        if timeout <= 0:
            self._remove(state, f"{reason}, no disconnect timeout")
            return
        log.info("session %s orphaned (%s), kept %ds for a re-attach", state.session.id,
                 reason, timeout)
        state.expiry = self._loop.call_later(timeout, self._remove, state, "expired")

    def _remove(self, state: SessionState, reason: str) -> None:
        """Free a finished session; keep only its counters, for the last STATS_HISTORY."""
        session_id = state.session.id
        if self.sessions.get(session_id) is not state:
            return
        self.retired[session_id] = self.session_stats(session_id)
        del self.sessions[session_id]
        while len(self.retired) > STATS_HISTORY:
            self.retired.popitem(last=False)
        log.info("session %s removed: %s", session_id, reason)
        if state.expiry is not None:
            state.expiry.cancel()
            state.expiry = None
        for peer in list(state.subscribers):
            # A close frame after what is already queued for the peer.
            peer.close(CloseCode.NORMAL_CLOSURE, "session closed", self.liveness.close_timeout)

    async def _run(self, state: SessionState, steps: Iterator[Step]) -> None:
        """Send a session's steps in order; the lock keeps attach/subscribe atomic.

        Writes under the lock never wait; the wait for slow readers happens
        between steps, without the lock, bounded by the keepalive deadline.
        """
        session = state.session
        for step in steps:
            async with state.lock:
                if isinstance(step, SlotStep):
                    slot = step.executed.slot
                    self._publish(state, step.executed, start=step.start,
                                  actions_from=step.actions_from)
                    if step.complete:
                        self._emit(state, session.record(SlotNotification(slot)))
                        self._fire_triggers(session.id, "slot", slot)
                        self._fire_triggers(session.id, "block", session.blocks_executed)
                else:
                    self._emit(state, session.record(step))
            slow = [p for p in state.peers() if p.ws.paused]
            if slow:
                await self._drain(slow)
            else:
                await asyncio.sleep(0)  # one step at a time: other sessions run too
            if session.id not in self.sessions:
                return

    def _emit(self, state: SessionState, frame: str) -> None:
        owner = state.owner
        if owner is not None:
            owner.write_frame(frame)

    def _publish(self, state: SessionState, executed: ExecutedSlot,
                 only: tuple[Peer, int] | None = None, start: int = 0,
                 actions_from: int = 0) -> None:
        peers = [only[0]] if only else list(state.subscribers)
        for peer in peers:
            if not peer.writable:  # closing: no frame would go, so none is built
                continue
            frames = [notification_frame(method, result_json, sub_id)
                      for method, result_json, sub_id in executed.notifications(
                          peer.subs, start, actions_from)
                      if only is None or only[1] == sub_id]
            if frames:
                state.notifications_sent += peer.write(frames)

    # --- PubSub -------------------------------------------------------------------

    async def _pubsub(self, ws: _LiveConnection, session_id: str) -> None:
        state = self.sessions.get(session_id)
        if state is None:
            return
        peer = self._peer(ws, "pubsub", session_id)
        state.subscribers.add(peer)
        log.info("pubsub connection for session %s", session_id)
        opened: float | None = self._loop.time()
        try:
            async for frame in ws:
                resume = opened is not None and _is_replay_subscribe(frame)
                await self._pubsub_frame(peer, state, frame)
                if resume and opened is not None:
                    self.resume_handshakes.record(opened, self._loop.time())
                opened = None
                await self._drain([peer])
        except ConnectionClosed:
            pass
        finally:
            peer.liveness.close()
            self.peers.discard(peer)
            state.subscribers.discard(peer)
            log.info("pubsub connection closed (session %s)", session_id)

    async def _pubsub_frame(self, peer: Peer, state: SessionState, frame: str | bytes) -> None:
        try:
            request = decode_pubsub_request(frame)
        except ProtocolError as exc:
            code = PARSE_ERROR if "not JSON" in exc.detail else INVALID_REQUEST
            peer.write_frame(encode_pubsub(JsonRpcError(None, code, str(exc))))
            return
        if isinstance(request, Subscribe | ActionSubscribe):
            kind = request.kind if isinstance(request, Subscribe) else None
            await self._handshake_delay("pubsub", kind, state.session.id)
            key = ((request.kind, request.address) if isinstance(request, Subscribe)
                   else ACTIONS_KEY)
            async with state.lock:
                sub_id = state.next_sub_id
                state.next_sub_id += 1
                peer.subs.setdefault(key, []).append(sub_id)
                peer.write_frame(encode_pubsub(SubscribeAck(request.id, sub_id)))
                if request.replay_from_slot is not None:
                    for executed in state.session.buffered_since(request.replay_from_slot):
                        self._publish(state, executed, only=(peer, sub_id))
                        # Replay drains as it goes (the session waits: this subscriber's
                        # order depends on it); one that stops draining is closed.
                        await self._drain([peer])
                        if not peer.writable:
                            break
            return
        removed = False
        for key, ids in list(peer.subs.items()):
            if request.subscription in ids and key[0] == request.kind:
                ids.remove(request.subscription)
                removed = True
                if not ids:
                    del peer.subs[key]
        peer.write_frame(encode_pubsub(UnsubscribeAck(request.id, removed)))


def _is_attach(frame: str | bytes) -> bool:
    """A connection's first request resumes a session (for :class:`ResumeHandshakes`)."""
    try:
        return isinstance(decode_request(frame), Attach)
    except ProtocolError:
        return False


def _is_replay_subscribe(frame: str | bytes) -> bool:
    try:
        request = decode_pubsub_request(frame)
    except ProtocolError:
        return False
    return isinstance(request, Subscribe) and request.replay_from_slot is not None


def _counted_matches(fault: CountedFault, role: str, kind: str | None,
                     session_id: str | None) -> bool:
    if fault.session_id is not None and fault.session_id != session_id:
        return False
    if fault.target == "all":
        return True
    if role == "control":
        return fault.target == "control"
    return fault.target == "subscriptions" or kind is None or fault.target == kind


__all__ = ["REAL_SERVER_LIVENESS", "STATS_HISTORY", "LivenessCounters", "ServerLimits",
           "ServerLiveness", "SessionStats", "SimulatorServer"]


def _members(state: SessionState | ParallelGroup | None) -> list[SessionState]:
    """The sessions a control connection's state holds: one, a group's, or none."""
    if state is None:
        return []
    if isinstance(state, ParallelGroup):
        return list(state.members.values())
    return [state]
