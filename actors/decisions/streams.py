"""Streams: which subscriptions a session has, and the requests that change that.

A plain class (no threads, no sockets) beside the supervisor, like the pacer and
the outbox. Subscribing adds a stream to each of them at once; unsubscribing is
a request that the pacer completes later (every executed block's items must be
read first), so its reply waits here until then, or until the session ends.
"""

from __future__ import annotations

import logging
from typing import Any

from ..events import Closed, Connecting, ConnectionChanged, ManagedSessionError
from ..requests import SubscribeStream, UnsubscribeStream
from .children import Children
from .outbox import Outbox, Reply, fail_reply
from .pacer import ContinuePacer


class Streams:
    def __init__(self, children: Children, outbox: Outbox, pacer: ContinuePacer,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._children = children
        self._outbox = outbox
        self._pacer = pacer
        self._log = log
        self._unsubscribing: dict[str, Reply | None] = {}

    def add(self, message: SubscribeStream, failure: Exception | None,
            shutting_down: bool) -> None:
        """Register a new stream (the supervisor then starts its link); raises if it
        cannot be added (the session failed, is shutting down or completed)."""
        self._refuse_if_over(failure, shutting_down)
        if message.kind in self._children:
            raise ValueError(f"kind: {message.kind} is already subscribed on this session")
        self._children.add(message.kind)
        self._outbox.add_stream(message.kind, message.addresses)
        self._pacer.add_stream(message.kind, self._outbox.resumed(message.kind))
        self._outbox.put(None, ConnectionChanged(message.kind, Connecting()))

    def unsubscribe(self, message: UnsubscribeStream, failure: Exception | None,
                    shutting_down: bool) -> None:
        """Ask the pacer to close a stream; a refusal is answered (or logged) at once."""
        try:
            self._refuse_if_over(failure, shutting_down)
            if message.kind not in self._children or self._pacer.closing(message.kind):
                raise ValueError(f"kind: {message.kind} is not subscribed on this session")
        except Exception as exc:  # noqa: BLE001 - answered to the asker
            if message.reply is not None:
                fail_reply(message.reply, exc)
            else:
                self._log.warning("unsubscribe refused: %s", exc)
            return
        self._unsubscribing[message.kind] = message.reply
        self._pacer.unsubscribe(message.kind)

    def _refuse_if_over(self, failure: Exception | None, shutting_down: bool) -> None:
        if failure is not None:
            raise failure
        if shutting_down or self._pacer.completed_event is not None:
            raise ManagedSessionError("closed", "session is over")

    def close_finished(self, close_link: Any) -> None:
        """Close the streams whose unsubscribe the pacer completed (every executed
        block's items were read): tell the link ``close_link`` (the message that
        stops it, which belongs to the link's actor), forget the stream, answer."""
        for name in self._pacer.streams_closed():
            self._children.tell(name, close_link)
            self._children.remove(name)
            self._outbox.remove_stream(name)
            self._outbox.put(None, ConnectionChanged(name, Closed()))
            self._log.info("%s unsubscribed", name)
            reply = self._unsubscribing.pop(name, None)
            if reply is not None:
                reply.set(None)

    def replay_plan(self, name: str, generation: int, start_slot: int | None
                    ) -> dict[str, int]:
        """``replayFromSlot`` per address for a link about to start (absent: live).

        A restart, or the first link of a stream resumed from a cursor, replays
        from what the application already has (see ``ContinuePacer.replay_from``).
        ``start_slot`` None: the session's start is unknown (a live subscription
        handle); an address with nothing delivered yet then subscribes live again.
        """
        if generation == 1 and not self._outbox.resumed(name):
            return {}
        replay: dict[str, int] = {}
        for address in self._outbox.addresses(name):
            last = self._outbox.replay_cursor(name, address)
            if last is not None or start_slot is not None:
                replay[address] = self._pacer.replay_from(name, last, start_slot or 0)
        live = len(self._outbox.addresses(name)) - len(replay)
        if live:
            self._log.warning("%s: %d address(es) with nothing delivered yet subscribe live "
                              "again (what came meanwhile is not replayed: pass "
                              "replay_from_slot for that)", name, live)
        self._pacer.resubscribing(name, self._outbox.delivered_through(name))
        return replay

    def report_gap(self, name: str) -> None:
        """A stream back Up (or a running continue answered) after a re-subscribe:
        slots that fell out of the server's replay buffer become a ``Gap`` event."""
        if not self._outbox.has_stream(name):  # the control link, or unsubscribed
            return
        gap = self._pacer.gap_after_resume(name, self._outbox.addresses(name))
        if gap is not None:
            self._log.error("gap on %s: slots %d..=%d (%d slots) fell out of the "
                            "server's replay buffer", name, gap.first_slot, gap.last_slot,
                            gap.slots)
            self._outbox.put(None, gap)

    def fail_pending(self, error: Exception) -> None:
        """The session ended: every unsubscribe still waiting gets its error."""
        for reply in self._unsubscribing.values():
            if reply is not None:
                fail_reply(reply, error)
        self._unsubscribing.clear()


__all__ = ["Streams"]
