"""The one exception the sans-I/O layer raises for bad input.

Every decoder failure (not UTF-8, not JSON, wrong type, missing field) becomes a
:class:`ProtocolError` so callers can catch exactly one type and still log
*which* field of *which* frame was at fault.
"""

from __future__ import annotations

FRAME_PREVIEW_CHARS = 120


def frame_preview(frame: str | bytes) -> str:
    """The start of a frame, safe to put in a log line or an error message."""
    if isinstance(frame, bytes | bytearray):
        text = bytes(frame[:FRAME_PREVIEW_CHARS]).decode("utf-8", errors="replace")
    else:
        text = frame[:FRAME_PREVIEW_CHARS]
    more = "…" if len(frame) > FRAME_PREVIEW_CHARS else ""
    return f"{text!r}{more}"


class ProtocolError(ValueError):
    """A frame (or a request argument) that does not match the wire protocol.

    ``path`` names the field at fault (``$.params.start_slot``) or is ``"$"`` for
    the frame as a whole; ``frame_start`` is the start of the offending frame.
    """

    def __init__(self, path: str, detail: str, frame: str | bytes | None = None) -> None:
        self.path = path
        self.detail = detail
        self.frame_start = frame_preview(frame) if frame is not None else ""
        where = f" in frame {self.frame_start}" if frame is not None else ""
        super().__init__(f"{path}: {detail}{where}")
