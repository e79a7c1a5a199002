"""WebSocket frames from a server (RFC 6455 §5.2), parsed from bytes: sans-I/O.

The client's reader hands every byte it reads to a :class:`FrameReader` and
takes whole messages (a text or binary message with its fragments joined) and
control frames back. Nothing here reads a socket; the reader thread owns that.

Why not websocket-client's own parser (it still does the upgrade and writes the
client's frames, which must be masked): it reads each header field through its
own call and joins lists of chunks, and on a dense notification stream that
was the client's largest cost, more than JSON decoding (py-spy: about 30 %
of the managed path against 17 % for the codec). This parser takes a frame's
header from one buffer with a few byte reads and its payload with one slice.

It is strict where the RFC says a client must fail the connection: reserved
bits without an extension, a masked frame from the server, an unknown opcode,
a fragmented or over-long control frame, a continuation with no message open.
Each raises :class:`FramingError`, naming the frame at fault; the connection
cannot go on after one (its byte stream has lost its frame boundaries), so the
caller ends it and reconnects. UTF-8 of text messages is left to the codec,
which maps bad text to a ``ProtocolError`` for that frame only.
"""

from __future__ import annotations

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_DATA = (OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
MAX_CONTROL_PAYLOAD = 125


class FramingError(Exception):
    """The server's byte stream broke the framing rules; the connection must end."""


class FrameTooLarge(FramingError):
    """A frame, or a message's fragments together, above the reader's size limit.

    Raised from the frame's header, before its payload is held in memory.
    """


class FrameReader:
    """Bytes in (:meth:`feed`), whole messages and control frames out (:meth:`next`).

    ``max_size`` bounds a frame and a message (fragments together) alike.
    Memory is the unparsed bytes plus one message: a frame still short of
    bytes is joined once when its last byte arrives, never chunk by chunk.
    """

    __slots__ = ("_buf", "_pos", "_chunks", "_chunked", "_wanted", "_max_size",
                 "_fragments", "_fragment_opcode")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buf = b""
        self._pos = 0
        # Bytes fed while the frame at _pos was short of _wanted more bytes.
        self._chunks: list[bytes] = []
        self._chunked = 0
        self._wanted = 0
        # The open fragmented message, joined as it comes: its memory is its size
        # (bounded by max_size), however many (even empty) fragments it takes.
        self._fragments = bytearray()
        self._fragment_opcode = 0

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
            return
        self._chunks.append(data)
        self._chunked += len(data)
        if self._chunked >= self._wanted:
            self._buf = b"".join([self._buf[self._pos:], *self._chunks])
            self._pos = 0
            self._chunks.clear()
            self._chunked = 0

    def ready(self) -> bool:
        """A whole frame is buffered (:meth:`next` may still return None if it is
        a fragment of a longer message)."""
        return not self._chunks and self._frame_bounds() is not None

    def data_messages(self, limit: int) -> list[bytes]:
        """The payloads of up to ``limit`` messages of the common shape at the read
        position, in order: each one whole, unfragmented, unmasked text or binary
        frame under 64 KiB with no RSV bits, within ``max_size``. Stops at the first
        frame of any other shape, or short of bytes; :meth:`next` takes that one
        (and raises for it, if it breaks the rules).

        Why: nearly every frame of a notification stream has that shape, and the
        reader's loop takes a whole read's worth in one call here, where
        :meth:`next` costs a call and a tuple per frame.
        """
        out: list[bytes] = []
        if self._chunks or self._fragment_opcode:
            return out
        buf, pos, max_size = self._buf, self._pos, self._max_size
        end, taken, append = len(buf), 0, out.append
        while taken < limit and end - pos >= 4:
            first = buf[pos]
            if first != 0x81 and first != 0x82:
                break
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                length, start = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
            else:
                break  # masked (bit 7) or a 64-bit length: next() decides
            stop = start + length
            if stop > end or length > max_size:
                break
            append(buf[start:stop])
            pos = stop
            taken += 1
        self._pos = pos
        return out

    def next(self) -> tuple[int, bytes] | None:
        """The next message or control frame as ``(opcode, payload)``; None when
        more bytes are needed. Raises :class:`FramingError`."""
        while True:
            if self._chunks:
                return None  # still short: feed() joins once the frame is whole
            # Any frame, with every header check (the common shape is taken in
            # runs by data_messages(), in a few byte reads).
            buf, pos = self._buf, self._pos
            bounds = self._frame_bounds()
            if bounds is None:
                return None
            first = buf[pos]
            start, end = bounds
            payload = buf[start:end]
            self._pos = end
            opcode = first & 0x0F
            fin = first & 0x80
            if opcode in _DATA and fin and not self._fragment_opcode:
                return opcode, payload  # the common case: a whole message in one frame
            if opcode in _CONTROL:
                if not fin:
                    raise FramingError(f"fragmented control frame (opcode {opcode:#x})")
                return opcode, payload
            message = self._fragment(opcode, fin, payload)
            if message is not None:
                return message

    def _fragment(self, opcode: int, fin: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode in _DATA:
            if self._fragment_opcode:
                raise FramingError(f"new message (opcode {opcode:#x}) while a fragmented "
                                   "one is still open")
            self._fragment_opcode = opcode
        elif not self._fragment_opcode:
            raise FramingError("continuation frame with no message open")
        self._fragments += payload  # its size was checked from its header
        if not fin:
            return None
        message = (self._fragment_opcode, bytes(self._fragments))
        self._fragments = bytearray()
        self._fragment_opcode = 0
        return message

    def _frame_bounds(self) -> tuple[int, int] | None:
        """Where the payload of the frame at the read position starts and ends,
        once it is all buffered; its header is checked as soon as it is (so an
        oversized frame is refused before its payload is read)."""
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 2:
            self._wanted = 2 - available
            return None
        first, second = buf[pos], buf[pos + 1]
        length = second & 0x7F
        header = 2
        if length == 126:
            header = 4
        elif length == 127:
            header = 10
        if available < header:
            self._wanted = header - available
            return None
        if length == 126:
            length = (buf[pos + 2] << 8) | buf[pos + 3]
        elif length == 127:
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            if length >> 63:
                raise FramingError("frame length with its most significant bit set")
        if first & 0x70:
            raise FramingError(f"reserved bits set ({first & 0x70:#x}) with no extension "
                               "negotiated")
        if second & 0x80:
            raise FramingError("masked frame from the server")
        opcode = first & 0x0F
        if opcode not in _DATA and opcode not in _CONTROL and opcode != OP_CONTINUATION:
            raise FramingError(f"unknown opcode {opcode:#x}")
        if opcode in _CONTROL and length > MAX_CONTROL_PAYLOAD:
            raise FramingError(f"control frame (opcode {opcode:#x}) of {length} bytes, "
                               f"over {MAX_CONTROL_PAYLOAD}")
        if length > self._max_size:
            raise FrameTooLarge(f"frame of {length} bytes exceeds max_frame_size "
                                f"{self._max_size}")
        if opcode == OP_CONTINUATION and len(self._fragments) + length > self._max_size:
            raise FrameTooLarge(f"fragmented message of {len(self._fragments) + length} "
                                f"bytes exceeds max_frame_size {self._max_size}")
        end = pos + header + length
        if end > len(buf):
            self._wanted = end - len(buf)
            return None
        return pos + header, end
