"""The simulator's network edge: a ``websockets`` asyncio server in its own thread.

Control connections at ``/backtest`` (``X-API-Key`` required), PubSub at
``/backtest/<session_id>``. All session state lives in
:mod:`protocol.simulator.engine`; this module only moves frames and applies
faults. Everything runs on one event loop thread, so no state is shared with
other threads except through :meth:`SimulatorServer.call_soon` / ``call``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

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
    BacktestError,
    Close,
    ContinueParams,
    CreateSession,
    Resume,
    SessionAttached,
    SlotNotification,
    Success,
)
from ..pubsub import (
    INVALID_REQUEST,
    PARSE_ERROR,
    JsonRpcError,
    StreamKind,
    Subscribe,
    SubscribeAck,
    UnsubscribeAck,
)
from .chain import Chain
from .engine import ExecutedSlot, Session, SlotStep, Step, error_frame
from .faults import CountedFault, FaultCounters, SlotTrigger

log = logging.getLogger("protocol.simulator")


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
PUBLISH_BATCH = 256  # frames per socket write; bounds the latency a batch adds


@attrs.define(eq=False)
class Peer:
    """One accepted WebSocket connection and what the server knows about it."""

    ws: ServerConnection
    role: str  # "control" or "pubsub"
    session_id: str | None = None
    subs: dict[tuple[StreamKind, str], list[int]] = attrs.field(factory=dict)
    blackholed: bool = False
    api_key: str = attrs.field(default="", repr=False)  # never logged

    @property
    def kinds(self) -> set[str]:
        return {kind for kind, _ in self.subs}

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

    async def send(self, frame: str | bytes) -> None:
        if self.blackholed:
            return  # a blackhole swallows everything
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            pass  # the reader side notices and cleans up

    async def send_batch(self, frames: list[str]) -> None:
        """Many text frames in one socket write.

        One ``send()`` per frame costs a syscall each and capped the stream near
        13k frames/s; framing through the sans-I/O protocol object and writing
        the joined bytes once is what lets the simulator outrun any client.
        """
        if self.blackholed or not frames:
            return
        try:
            async with self.ws.send_context():
                protocol = self.ws.protocol
                for frame in frames:
                    protocol.send_text(frame.encode())
                self.ws.transport.write(b"".join(protocol.data_to_send()))
        except ConnectionClosed:
            pass

    def drop(self) -> None:
        self.ws.transport.abort()  # RST, no close frame

    def blackhole(self) -> None:
        self.blackholed = True
        self.ws.transport.pause_reading()


@attrs.define(eq=False)
class SessionState:
    session: Session
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    owner: Peer | None = None
    subscribers: set[Peer] = attrs.field(factory=set)
    expiry: asyncio.TimerHandle | None = None
    next_sub_id: int = 1
    notifications_sent: int = 0


@attrs.frozen
class ServerLimits:
    """What the simulator accepts from a client: it is a server users will run."""

    max_frame_size: int = 2**20  # bytes; a larger frame closes the connection (1009)
    max_connections_per_client: int = 256  # live WebSocket connections per client address
    handshake_timeout: float = 10.0  # TCP open but no complete upgrade: closed after this


def _client_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"


@attrs.frozen
class SessionStats:
    session_id: str
    continues_received: int
    blocks_executed: int
    completed: bool
    owner_connected: bool
    subscribers: int
    notifications_sent: int


class SimulatorServer:
    """Owns the event loop thread, the listening socket and every session."""

    def __init__(self, chain: Chain, api_key: str, host: str, port: int, *,
                 limits: ServerLimits | None = None, extra_api_keys: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.chain = chain
        self.api_key = api_key
        self.api_keys = frozenset((api_key, *extra_api_keys))
        self.limits = limits or ServerLimits()
        self.ssl_context = ssl_context
        self.connections_by_client: dict[str, int] = defaultdict(int)
        self.host = host
        self.port = port
        self.sessions: dict[str, SessionState] = {}
        self.retired: dict[str, SessionState] = {}  # closed or expired: stats only
        self.peers: set[Peer] = set()
        self.slot_triggers: list[SlotTrigger] = []
        self.handshake_delays: list[CountedFault] = []
        self.http_faults: list[CountedFault] = []
        self.lose_continue: list[str | None] = []
        self.fault_counts = FaultCounters()
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
            ping_interval=None,  # the client drives keepalive; a blackhole must stay silent
            compression=None, close_timeout=1, server_header=None, ssl=self.ssl_context,
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
        state = self.sessions.get(session_id) or self.retired[session_id]
        s = state.session
        return SessionStats(session_id, s.continues_received, s.blocks_executed, s.completed,
                            state.owner is not None, len(state.subscribers),
                            state.notifications_sent)

    # --- faults -------------------------------------------------------------------

    def apply_fault(self, trigger: SlotTrigger) -> None:
        for peer in [p for p in self.peers if p.matches(trigger.target, trigger.session_id)]:
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
                self._spawn(peer.send(trigger.frame))

    def _take_lost_continue(self, session_id: str) -> bool:
        for wanted in self.lose_continue:
            if wanted in (None, session_id):
                self.lose_continue.remove(wanted)
                self.fault_counts.lose_continue += 1
                log.info("fault: continue of session %s lost with its connection", session_id)
                return True
        return False

    def _fire_slot_triggers(self, session_id: str, slot: int) -> None:
        due = [t for t in self.slot_triggers
               if t.slot == slot and t.session_id in (None, session_id)]
        for trigger in due:
            self.slot_triggers.remove(trigger)
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
                    for sid in [*self.sessions, *self.retired]}
        else:
            return connection.respond(404, "not found\n")
        response = connection.respond(200, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection) -> None:
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

    # --- control channel ---------------------------------------------------------

    async def _control(self, ws: ServerConnection) -> None:
        peer = Peer(ws, "control", api_key=ws.request.headers.get("X-API-Key", "")
                    if ws.request else "")
        self.peers.add(peer)
        log.info("control connection from %s", ws.remote_address)
        state: SessionState | None = None
        try:
            async for frame in ws:
                if peer.blackholed:
                    continue
                state = await self._control_frame(peer, state, frame)
        except ConnectionClosed:
            pass
        finally:
            self.peers.discard(peer)
            log.info("control connection closed (session %s)", peer.session_id)
            if state is not None and state.owner is peer:
                self._orphan(state)

    async def _control_frame(self, peer: Peer, state: SessionState | None,
                             frame: str | bytes) -> SessionState | None:
        session = state.session if state else None
        try:
            request = decode_request(frame)
        except ProtocolError as exc:
            await peer.send(error_frame(session, BacktestError("invalidRequest",
                                                               {"error": str(exc)})))
            return state
        if isinstance(request, CreateSession):
            if state is not None:
                await peer.send(error_frame(session, BacktestError(
                    "invalidRequest", {"error": "a session is already bound to this connection"})))
                return state
            return await self._create(peer, request)
        if isinstance(request, Attach):
            return await self._attach(peer, state, request)
        if state is None or session is None:
            await peer.send(error_frame(None, BacktestError(
                "invalidRequest", {"error": "no session on this connection"})))
            return state
        if isinstance(request, ContinueParams):
            if self._take_lost_continue(session.id):
                peer.drop()
                return state
            refusal = session.check_continue()
            if refusal is not None:
                await peer.send(error_frame(session, refusal))
            else:
                self._spawn(self._run(state, session.run_continue(request)))
        elif isinstance(request, Resume):
            await peer.send(encode_response(Success()))
        elif isinstance(request, Close):
            await peer.send(encode_response(Success()))
            self._remove(state, "closed by client")
            return None
        return state

    async def _create(self, peer: Peer, request: CreateSession) -> SessionState | None:
        session, error = Session.open(request, peer.api_key, self.chain)
        if session is None:
            assert error is not None
            await peer.send(error_frame(None, error))
            return None
        state = SessionState(session, owner=peer)
        self.sessions[session.id] = state
        peer.session_id = session.id
        log.info("session %s created for slots %d..=%d", session.id, request.start_slot,
                 request.end_slot)
        await self._handshake_delay("control", None, session.id)
        self._spawn(self._run(state, session.startup()))
        return state

    async def _attach(self, peer: Peer, state: SessionState | None, request: Attach
                      ) -> SessionState | None:
        target = self.sessions.get(request.session_id)
        if target is None:
            await peer.send(error_frame(None, BacktestError(
                "sessionNotFound", {"session_id": request.session_id})))
            return state
        if target.session.api_key != peer.api_key:
            await peer.send(error_frame(None, BacktestError("sessionOwnerMismatch")))
            return state
        owner = target.owner
        if owner is not None and owner is not peer:
            if not owner.blackholed:
                await peer.send(error_frame(None, BacktestError(
                    "sessionOwnershipBusy", {"reason": "another connection owns the session"})))
                return state
            owner.drop()  # a silenced owner is stale: the new connection takes over
        if target.expiry is not None:
            target.expiry.cancel()
            target.expiry = None
        await self._handshake_delay("control", None, request.session_id)
        async with target.lock:
            # Handshake answers are per connection, not session events: not sequenced.
            s = target.session
            await peer.send(encode_response(SessionAttached(s.id, f"/backtest/{s.id}")))
            for frame in s.replay_after(request.last_sequence):
                await peer.send(frame)
            target.owner = peer
            peer.session_id = s.id
        log.info("session %s attached after sequence %s", s.id, request.last_sequence)
        return target

    def _orphan(self, state: SessionState) -> None:
        state.owner = None
        timeout = state.session.create.disconnect_timeout_secs
        if timeout <= 0:
            self._remove(state, "control connection lost, no disconnect timeout")
            return
        log.info("session %s kept %ds for a re-attach", state.session.id, timeout)
        state.expiry = self._loop.call_later(timeout, self._remove, state, "expired")

    def _remove(self, state: SessionState, reason: str) -> None:
        if self.sessions.pop(state.session.id, None) is None:
            return
        self.retired[state.session.id] = state
        log.info("session %s removed: %s", state.session.id, reason)
        if state.expiry is not None:
            state.expiry.cancel()
        for peer in list(state.subscribers):
            # A graceful close frame goes after what is already queued for the peer.
            self._spawn(peer.ws.close())

    async def _run(self, state: SessionState, steps: Iterator[Step]) -> None:
        """Send a session's steps in order; the lock keeps attach/subscribe atomic."""
        session = state.session
        for step in steps:
            async with state.lock:
                if isinstance(step, SlotStep):
                    slot = step.executed.slot
                    await self._publish(state, step.executed)
                    await self._emit(state, session.record(SlotNotification(slot)))
                    self._fire_slot_triggers(session.id, slot)
                else:
                    await self._emit(state, session.record(step))
            if session.id not in self.sessions:
                return

    async def _emit(self, state: SessionState, frame: str) -> None:
        if state.owner is not None:
            await state.owner.send(frame)

    async def _publish(self, state: SessionState, executed: ExecutedSlot,
                       only: tuple[Peer, int] | None = None) -> None:
        peers = [only[0]] if only else list(state.subscribers)
        for peer in peers:
            batch: list[str] = []
            for method, result_json, sub_id in executed.notifications(peer.subs):
                if only is None or only[1] == sub_id:
                    batch.append(notification_frame(method, result_json, sub_id))
                    if len(batch) >= PUBLISH_BATCH:
                        await peer.send_batch(batch)
                        state.notifications_sent += len(batch)
                        batch = []
            await peer.send_batch(batch)
            state.notifications_sent += len(batch)

    # --- PubSub -------------------------------------------------------------------

    async def _pubsub(self, ws: ServerConnection, session_id: str) -> None:
        state = self.sessions.get(session_id)
        if state is None:
            return
        peer = Peer(ws, "pubsub", session_id)
        self.peers.add(peer)
        state.subscribers.add(peer)
        log.info("pubsub connection for session %s", session_id)
        try:
            async for frame in ws:
                if not peer.blackholed:
                    await self._pubsub_frame(peer, state, frame)
        except ConnectionClosed:
            pass
        finally:
            self.peers.discard(peer)
            state.subscribers.discard(peer)
            log.info("pubsub connection closed (session %s)", session_id)

    async def _pubsub_frame(self, peer: Peer, state: SessionState, frame: str | bytes) -> None:
        try:
            request = decode_pubsub_request(frame)
        except ProtocolError as exc:
            code = PARSE_ERROR if "not JSON" in exc.detail else INVALID_REQUEST
            await peer.send(encode_pubsub(JsonRpcError(None, code, str(exc))))
            return
        if isinstance(request, Subscribe):
            await self._handshake_delay("pubsub", request.kind, state.session.id)
            async with state.lock:
                sub_id = state.next_sub_id
                state.next_sub_id += 1
                peer.subs.setdefault((request.kind, request.address), []).append(sub_id)
                await peer.send(encode_pubsub(SubscribeAck(request.id, sub_id)))
                if request.replay_from_slot is not None:
                    for executed in state.session.buffered_since(request.replay_from_slot):
                        await self._publish(state, executed, only=(peer, sub_id))
            return
        removed = False
        for key, ids in list(peer.subs.items()):
            if request.subscription in ids and key[0] == request.kind:
                ids.remove(request.subscription)
                removed = True
                if not ids:
                    del peer.subs[key]
        await peer.send(encode_pubsub(UnsubscribeAck(request.id, removed)))


def _counted_matches(fault: CountedFault, role: str, kind: str | None,
                     session_id: str | None) -> bool:
    if fault.session_id is not None and fault.session_id != session_id:
        return False
    if fault.target == "all":
        return True
    if role == "control":
        return fault.target == "control"
    return fault.target == "subscriptions" or kind is None or fault.target == kind


__all__ = ["SessionStats", "SimulatorServer"]
