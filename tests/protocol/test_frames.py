"""The sans-I/O frame reader against websocket-client's own frame writer.

Frames are built by websocket-client (``ABNF.format`` with no mask, as a server
sends them), cut at random points and fed back; the reader must give back
exactly the messages and control frames that went in, whatever the cuts.
"""

from __future__ import annotations

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    FrameTooLarge,
    FramingError,
)


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
          mask: bool = False) -> bytes:
    """A frame as websocket-client writes it (a server's frames are unmasked)."""
    if opcode not in websocket.ABNF.OPCODES:  # websocket-client refuses to write it
        return bytes([0x80 | opcode, len(payload)]) + payload
    abnf = websocket.ABNF(int(fin), int(bool(rsv & 4)), int(bool(rsv & 2)), int(bool(rsv & 1)),
                          opcode, int(mask), payload)
    return bytes(abnf.format())


def read_all(reader: FrameReader, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:], strict=False):
        reader.feed(data[start:end])
        while (message := reader.next()) is not None:
            out.append(message)
    return out


# A message: its opcode, payload and how many fragments it is sent in; between
# messages, control frames may come (also between the fragments of one).
_message = st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]),
                     st.binary(max_size=70_000), st.integers(1, 4),
                     st.lists(st.tuples(st.sampled_from([OP_PING, OP_PONG]),
                                        st.binary(max_size=125)), max_size=2))


Message = tuple[int, bytes, int, list[tuple[int, bytes]]]


def stream_of(messages: list[Message]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The wire bytes of ``messages`` and what a reader must give back, in order."""
    wire = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, payload, parts, controls in messages:
        step = max(1, -(-len(payload) // parts))
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for n, piece in enumerate(pieces):
            wire += frame(opcode if n == 0 else OP_CONTINUATION, piece,
                          fin=n == len(pieces) - 1)
            if n == 0:  # controls come after the first fragment: inside a fragmented
                for control in controls:  # message, or just after a whole one
                    wire += frame(*control)
                    if len(pieces) > 1:
                        expected.append(control)
        expected.append((opcode, payload))  # complete at its last fragment
        if len(pieces) == 1:
            expected += controls
    return wire, expected


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, max_size=8), st.lists(st.integers(0, 10**6), max_size=30))
def test_any_stream_cut_anywhere_reads_back_as_written(messages: list[Message],
                                                       cuts: list[int]) -> None:
    wire, expected = stream_of(messages)
    assert read_all(FrameReader(2**20), wire, cuts) == expected


def read_all_in_runs(reader: FrameReader, data: bytes, cuts: list[int],
                     limits: list[int]) -> list[tuple[str | int, bytes]]:
    """As the client's reader takes them: runs of data messages, then one frame."""
    out: list[tuple[str | int, bytes]] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    turn = 0
    for start, end in zip(points, points[1:], strict=False):
        reader.feed(data[start:end])
        while True:
            limit = limits[turn % len(limits)] if limits else 512
            turn += 1
            run = reader.data_messages(limit)
            assert len(run) <= limit
            out += [("data", payload) for payload in run]
            if run:
                continue
            if (message := reader.next()) is None:
                break
            opcode, payload = message
            out.append(("data" if opcode in (OP_TEXT, OP_BINARY) else opcode, payload))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, max_size=8), st.lists(st.integers(0, 10**6), max_size=30),
       st.lists(st.integers(0, 5), max_size=4))
def test_runs_of_data_messages_read_back_as_written(
        messages: list[Message], cuts: list[int], limits: list[int]) -> None:
    """data_messages() and next() taking turns give back what was written, with
    every control frame in its place and no run longer than asked."""
    wire, expected = stream_of(messages)
    assert read_all_in_runs(FrameReader(2**20), wire, cuts, limits) == [
        ("data" if op in (OP_TEXT, OP_BINARY) else op, p) for op, p in expected]


def test_a_run_of_data_messages_stops_at_an_oversized_frame_and_next_refuses_it() -> None:
    reader = FrameReader(100)
    reader.feed(frame(OP_TEXT, b"a" * 50) + frame(OP_TEXT, b"b" * 101) + frame(OP_TEXT, b"c"))
    assert reader.data_messages(10) == [b"a" * 50]
    assert reader.data_messages(10) == []
    with pytest.raises(FrameTooLarge):
        reader.next()


def test_lengths_at_each_encoding_boundary() -> None:
    for size in (0, 1, 125, 126, 127, 65535, 65536, 70_000):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert read_all(FrameReader(2**20), frame(OP_TEXT, payload), [1, 2, 3, 9, 11]) == [
            (OP_TEXT, payload)]


def test_a_frame_still_short_of_bytes_is_not_joined_chunk_by_chunk() -> None:
    payload = b"x" * 1_000_000
    reader = FrameReader(2**21)
    wire = frame(OP_BINARY, payload)
    for i in range(0, len(wire), 1000):
        reader.feed(wire[i:i + 1000])
        assert reader.ready() is (i + 1000 >= len(wire))
    assert reader.next() == (OP_BINARY, payload)
    assert reader.next() is None


def test_oversized_frame_is_refused_from_its_header() -> None:
    reader = FrameReader(1000)
    reader.feed(frame(OP_TEXT, b"x" * 1001)[:4])  # the header only
    with pytest.raises(FrameTooLarge, match="frame of 1001 bytes exceeds max_frame_size 1000"):
        reader.next()


def test_oversized_fragmented_message_is_refused() -> None:
    reader = FrameReader(1000)
    reader.feed(frame(OP_TEXT, b"x" * 600, fin=False) + frame(OP_CONTINUATION, b"y" * 600))
    with pytest.raises(FrameTooLarge, match="fragmented message"):
        reader.next()


@pytest.mark.parametrize(("wire", "error"), [
    (frame(OP_TEXT, b"a", rsv=4), "reserved bits set"),
    (frame(OP_TEXT, b"a", mask=True), "masked frame from the server"),
    (frame(0x3, b"a"), "unknown opcode 0x3"),
    (frame(0xB, b""), "unknown opcode 0xb"),
    (frame(OP_PING, b"a", fin=False), "fragmented control frame"),
    (frame(OP_PING, b"a" * 126), "control frame .* of 126 bytes"),
    (frame(OP_CLOSE, b"a" * 200), "control frame .* of 200 bytes"),
    (frame(OP_CONTINUATION, b"a"), "continuation frame with no message open"),
    (frame(OP_TEXT, b"a", fin=False) + frame(OP_BINARY, b"b"),
     "new message .* while a fragmented one is still open"),
    (b"\x81\x7f" + (2**63).to_bytes(8, "big"), "most significant bit"),
], ids=lambda value: value if isinstance(value, str) else "frame")  # a masked frame's key is random
def test_framing_errors_name_the_frame_at_fault(wire: bytes, error: str) -> None:
    reader = FrameReader(2**20)
    reader.feed(wire)
    with pytest.raises(FramingError, match=error):
        while reader.next() is not None:
            pass
