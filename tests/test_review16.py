"""Review #16: hostile servers and inputs against the new frame reader, the outbox
dedup memory and the timeout check. Real sockets only: a scripted WebSocket
server on 127.0.0.1 (``tests.support.scripted``) that writes exactly the bytes a test
gives it, past its own framing, read by the real client (``Connection``), or the
local simulator. Each test here failed on the commit it was written against.
(The review's fifth defect, a framing error right after a full batch, is
covered by tests/test_reader.py, fixed just before the review came in.)
"""

from __future__ import annotations

import logging
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pykka
from websockets.sync.server import ServerConnection

from actors.decisions.outbox import Outbox
from actors.events import Transaction
from protocol.frames import OP_CONTINUATION, OP_PING, OP_TEXT
from protocol.simulator import LocalSimulator
from tests.support.harness import (
    Recorder,
    disconnects,
    no_leaks,
    open_connection,
    received_items,
    start,
    until_disconnected,
    wait_for,
)
from tests.support.scripted import scripted_server


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """A server frame (unmasked); ``length`` overrides the length in the header."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if size < 126:
        head = bytes([first, size])
    elif size < 65536:
        head = bytes([first, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + size.to_bytes(8, "big")
    return head + payload


@contextmanager
def client(url: str, *, max_frame_size: int) -> Iterator[pykka.ActorRef[Any]]:
    """A real ``Connection`` with a large window, telling the yielded recorder."""
    owner = Recorder.start()
    conn = open_connection(url, owner, window=100, max_frame_size=max_frame_size)
    try:
        yield owner
    finally:
        conn.abort()
        conn.join(3.0)
        owner.stop()


# --- the frame reader on the read path ------------------------------------------------


def test_a_fragmented_message_over_the_limit_is_refused_from_the_continuation_header(
        ) -> None:
    """``FrameTooLarge`` promises "a frame, or a message's fragments together, above
    the reader's size limit ... raised from the frame's header, before its payload
    is held in memory". A 600-byte first fragment and a continuation whose header
    says 600 more (limit 1000) is over the limit from that header, but the reader
    only adds the size up after the whole payload has arrived: it waits (and on a
    real limit of 8 MiB would buffer up to twice that) instead of failing the
    connection. Here the payload never comes and the connection is never failed."""
    done = threading.Event()
    wire = frame(OP_TEXT, b"x" * 600, fin=False) + frame(OP_CONTINUATION, b"", length=600)

    def script(ws: ServerConnection) -> None:
        ws.socket.sendall(wire)  # raw bytes, past the server's own framing
        done.wait(20)

    with no_leaks(5.0), scripted_server(script) as url, \
            client(url, max_frame_size=1000) as owner:
        try:
            seen = until_disconnected(owner, 3)
            assert [d.reason.split(":")[0] for d in disconnects(seen)] == ["FrameTooLarge"]
        finally:
            done.set()


def test_endless_empty_continuation_frames_do_not_grow_memory_without_bound() -> None:
    """Empty continuation frames add 0 bytes to a message's size, so the limit
    never trips, yet the reader appends each (an 8-byte list slot per 2 bytes on
    the wire) to the open message's fragment list: a server can grow the
    client's memory without bound inside one never-finished message. The
    reader's own contract is "memory is the unparsed bytes plus one message"
    (here a 1-byte message, limit 1024). 400,000 empty fragments (800 KB on
    the wire) must not leave the client holding megabytes."""
    done, go = threading.Event(), threading.Event()
    count = 400_000
    wire = (frame(OP_TEXT, b"x", fin=False) + frame(OP_CONTINUATION, b"", fin=False) * count
            + frame(OP_PING, b"mark"))

    def script(ws: ServerConnection) -> None:
        if go.wait(20):  # once the test has its baseline
            ws.socket.sendall(wire)
        done.wait(20)

    tracemalloc.start()
    try:
        with no_leaks(5.0), scripted_server(script) as url, \
                client(url, max_frame_size=1024) as owner:
            try:
                base = tracemalloc.get_traced_memory()[0]
                go.set()
                # The ping after the fragments is answered: every byte before it was parsed.
                wait_for(lambda: any(type(i).__name__ == "Pong"
                                     for i in received_items(owner.ask("get")))
                         or disconnects(owner.ask("get")), 15, "the ping after the fragments")
                grown = tracemalloc.get_traced_memory()[0] - base
                if not disconnects(owner.ask("get")):  # refusing the message is an answer as well
                    assert grown < 1 << 20, f"{grown} bytes held for a 1-byte message"
            finally:
                go.set()
                done.set()
    finally:
        tracemalloc.stop()


# --- the application's side -----------------------------------------------------------


def test_next_event_with_a_huge_integer_timeout_waits_instead_of_overflowing() -> None:
    """``_check_timeout`` treats anything past the platform's longest wait as "no
    bound" (``float('inf')`` and ``1e20`` give None), but an int too large for a
    float (``10**400``, a valid number of seconds) reaches ``math.isnan`` first
    and raises ``OverflowError``, which the documented contract (TypeError or
    ValueError for a bad timeout) does not name. It should wait without a bound
    (here: return the first event at once)."""
    with LocalSimulator(seed=3, slots=40) as sim, no_leaks(5.0):
        first, _ = sim.available_range()
        session = start(sim, first, first + 5)
        try:
            event = session.next_event(timeout=10**400)
            assert event is not None
        finally:
            session.shutdown()


def test_dedup_memory_per_key_does_not_grow_with_the_number_of_subscribed_addresses(
        ) -> None:
    """A transaction notified for two subscribed addresses is remembered with a bit
    mask of both; the bit of address i is ``1 << i``, so with 20,000 addresses
    subscribed (the matcher's own docstring: "a user may subscribe thousands")
    a key that came for two late-listed addresses holds a 20,000-bit int,
    about 2.7 KB, for 100 slots: on a dense stream (~2,700 keys a slot) that is
    hundreds of MB, ~12x the set of two addresses it replaced. The dedup memory
    of a key should not scale with the subscription list's length."""
    log = logging.LoggerAdapter(logging.getLogger("test.review16"), {})
    addresses = tuple(f"addr{i}" for i in range(20_000))
    outbox = Outbox(window=10**9, log=log)
    outbox.add_stream("transactions", addresses)
    for n in range(2_000):
        tx = Transaction(n // 100, f"sig{n}", None, None, 0, ())
        outbox.stream_items("transactions", [(addresses[-1], tx), (addresses[-2], tx)], True)
    seen = outbox._streams["transactions"].seen  # noqa: SLF001 - the memory under test
    per_key = sum(sys.getsizeof(v) for v in seen.values()) / len(seen)
    assert per_key < 512, f"{per_key:.0f} bytes per remembered key"
