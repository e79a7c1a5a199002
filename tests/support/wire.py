"""Bare websocket-client helpers for driving the simulator without actors."""

from __future__ import annotations

import websocket

from protocol import (
    CreateSession,
    ProtocolError,
    decode_pubsub,
    decode_response,
    encode_request,
    encode_subscribe,
    pubsub_url,
    resolve_rpc_url,
)
from protocol.messages import Completed, ReadyForContinue, Response, SessionCreated
from protocol.pubsub import PubsubMessage, Subscribe, SubscribeAck
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator

TIMEOUT = 5.0


def control(sim: LocalSimulator, api_key: str = DEFAULT_API_KEY, *, url: str | None = None
            ) -> websocket.WebSocket:
    """A control connection to ``sim`` (or to ``url``, e.g. through a fault proxy)."""
    return websocket.create_connection(url or sim.url, header={"X-API-Key": api_key},
                                       timeout=TIMEOUT)


def read_until(ws: websocket.WebSocket, *stop: type) -> list[tuple[int | None, Response]]:
    """Read control responses up to and including the first of the ``stop`` types."""
    out: list[tuple[int | None, Response]] = []
    while True:
        seq, msg = decode_response(ws.recv())
        out.append((seq, msg))
        if isinstance(msg, stop):
            return out


def create(sim: LocalSimulator, start: int, end: int, *, url: str | None = None,
           **kwargs: object
           ) -> tuple[websocket.WebSocket, str, list[tuple[int | None, Response]]]:
    ws = control(sim, url=url)
    ws.send(encode_request(CreateSession(start, end, **kwargs)))  # type: ignore[arg-type]
    msgs = read_until(ws, ReadyForContinue, Completed)
    session_id = next(m.session_id for _, m in msgs if isinstance(m, SessionCreated))
    return ws, session_id, msgs


def subscribe(sim: LocalSimulator, session_id: str, kind: str, addresses: list[str],
              replay_from_slot: int | None = None, *, url: str | None = None,
              **options: object) -> tuple[websocket.WebSocket, list[PubsubMessage]]:
    """A subscribed connection, and the notifications that came in between the acks.

    ``url`` is the control URL the session's PubSub endpoint resolves against
    (a proxy's, say); ``options`` go to ``websocket.create_connection``.
    """
    endpoint = pubsub_url(resolve_rpc_url(url or sim.url, f"/backtest/{session_id}"))
    options.setdefault("timeout", TIMEOUT)
    ws = websocket.create_connection(endpoint, **options)
    early: list[PubsubMessage] = []
    for i, address in enumerate(addresses, 1):
        ws.send(encode_subscribe(Subscribe(i, kind, address, replay_from_slot)))  # type: ignore[arg-type]
        while not isinstance(msg := decode_pubsub(ws.recv()), SubscribeAck):
            early.append(msg)
        assert msg.id == i
    return ws, early


def drain_pubsub(ws: websocket.WebSocket) -> list[PubsubMessage]:
    """Everything the server sent before now: a ping's pong comes after all of it."""
    ws.ping(b"barrier")
    out: list[PubsubMessage] = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"barrier":
            return out
        if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            out.append(decode_pubsub(frame.data))


__all__ = ["ProtocolError", "control", "create", "drain_pubsub", "read_until", "subscribe"]
