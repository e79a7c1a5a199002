"""The simulator's limits towards a client: oversized frames (1009), connections per
client, upgrades that never come, and sessions owned by another key."""

from __future__ import annotations

import socket
import time

import pytest
import websocket

from protocol import (
    Attach,
    decode_response,
    encode_request,
)
from protocol.simulator import LocalSimulator, ServerLimits
from tests.support.harness import wait_for
from tests.support.wire import control, create


def test_server_closes_oversized_frame_with_1009() -> None:
    with LocalSimulator(limits=ServerLimits(max_frame_size=4096)) as simulator:
        ws = control(simulator)
        ws.send("x" * 5000)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1009
        under = control(simulator)
        under.send("y" * 4000)  # under the limit: an error answer, the connection stays
        _, msg = decode_response(under.recv())
        assert msg.error.kind == "invalidRequest"  # type: ignore[union-attr]


def test_server_connection_limit_per_client() -> None:
    with LocalSimulator(limits=ServerLimits(max_connections_per_client=3)) as simulator:
        held = [control(simulator) for _ in range(3)]
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            control(simulator)
        assert info.value.status_code == 429
        held.pop().close()
        wait_for(lambda: _connects(simulator), 5, "a free connection slot")
        assert simulator.fault_counts()["connection_limit"] >= 1


def _connects(simulator: LocalSimulator) -> bool:
    try:
        control(simulator).close()
        return True
    except websocket.WebSocketBadStatusException:
        return False


def test_server_closes_a_client_that_never_upgrades() -> None:
    with LocalSimulator(limits=ServerLimits(handshake_timeout=0.3)) as simulator:
        silent = socket.create_connection(("127.0.0.1", simulator.port))
        silent.settimeout(5)
        started = time.monotonic()
        data = silent.recv(1024)  # the server gives up on us: EOF (or an error answer)
        elapsed = time.monotonic() - started
        assert elapsed >= 0.25 and elapsed < 2.0
        assert data == b"" or data.startswith(b"HTTP/1.1 ")
        silent.close()


def test_attach_with_another_api_key_is_owner_mismatch() -> None:
    with LocalSimulator(extra_api_keys=("second-key",)) as simulator:
        first, _ = simulator.available_range()
        owner, sid, _ = create(simulator, first, first + 5)
        owner.close()
        intruder = control(simulator, api_key="second-key")
        intruder.send(encode_request(Attach(sid, None)))
        _, msg = decode_response(intruder.recv())
        assert msg.error.kind == "sessionOwnerMismatch"  # type: ignore[union-attr]
        assert msg.error.terminal  # type: ignore[union-attr]
