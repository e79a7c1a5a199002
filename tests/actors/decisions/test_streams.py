"""Streams as a plain class: subscribing registers a stream with every owner at once;
an unsubscribe waits for the pacer, then closes the link and answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from actors.decisions.children import Children
from actors.decisions.outbox import Outbox
from actors.decisions.pacer import ContinuePacer
from actors.decisions.streams import Streams
from actors.events import Closed, Connecting, ConnectionChanged, ManagedSessionError
from actors.requests import SubscribeStream, UnsubscribeStream
from protocol import ReconnectPolicy
from protocol.simulator.chain import Chain

LOG = logging.LoggerAdapter(logging.getLogger("test.streams"), {})
A, B, C = (Chain(0).addresses[i] for i in range(3))


class Reply:
    """What a pykka future is to the plain classes: something answered once."""

    def __init__(self) -> None:
        self.value: Any = "unanswered"

    def set(self, value: Any = None) -> None:
        self.value = value

    def set_exception(self, exc_info: Any = None) -> None:
        self.value = exc_info[1]


class Owners:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []
        self.children = Children(ReconnectPolicy(), self.send)
        self.outbox = Outbox(window=64, log=LOG)
        self.pacer = ContinuePacer()
        self.streams = Streams(self.children, self.outbox, self.pacer, LOG)

    def send(self, ref: Any, message: Any) -> bool:
        self.sent.append((ref, message))
        return True

    def queued(self) -> list[Any]:
        reply = Reply()
        self.outbox.take(reply, 100, ManagedSessionError("closed"))
        return [] if isinstance(reply.value, ManagedSessionError) else list(reply.value)


def test_a_new_stream_is_registered_with_every_owner_and_announced() -> None:
    owners = Owners()
    owners.streams.add(SubscribeStream("transactions", (A, B)), None, False)
    assert "transactions" in owners.children
    assert owners.outbox.addresses("transactions") == (A, B)
    assert not owners.pacer.closing("transactions")
    assert owners.queued() == [ConnectionChanged("transactions", Connecting())]
    with pytest.raises(ValueError, match="kind: transactions is already subscribed"):
        owners.streams.add(SubscribeStream("transactions", (C,)), None, False)


def test_nothing_is_added_to_a_session_that_failed_or_is_ending() -> None:
    owners = Owners()
    failure = ManagedSessionError("control_failed", "gone")
    with pytest.raises(ManagedSessionError) as caught:
        owners.streams.add(SubscribeStream("transactions", (A,)), failure, False)
    assert caught.value is failure
    with pytest.raises(ManagedSessionError, match="closed: session is over"):
        owners.streams.add(SubscribeStream("transactions", (A,)), None, True)
    assert "transactions" not in owners.children


def test_an_unsubscribe_of_an_unknown_stream_is_refused_through_its_reply() -> None:
    owners = Owners()
    reply = Reply()
    owners.streams.unsubscribe(UnsubscribeStream("account_diffs", reply), None, False)
    assert isinstance(reply.value, ValueError)
    assert "kind: account_diffs is not subscribed" in str(reply.value)


def test_an_unsubscribe_closes_the_link_once_the_pacer_releases_the_stream() -> None:
    owners = Owners()
    owners.streams.add(SubscribeStream("transactions", (A,)), None, False)
    owners.children["transactions"].ref = "link-1"
    owners.queued()
    reply = Reply()
    owners.streams.unsubscribe(UnsubscribeStream("transactions", reply), None, False)
    assert owners.pacer.closing("transactions") and reply.value == "unanswered"
    owners.streams.close_finished("close")  # nothing executed: nothing left to confirm
    assert owners.sent == [("link-1", "close")]
    assert "transactions" not in owners.children
    assert not owners.outbox.has_stream("transactions")
    assert owners.queued() == [ConnectionChanged("transactions", Closed())]
    assert reply.value is None


def test_an_unsubscribe_still_waiting_when_the_session_ends_gets_the_error() -> None:
    owners = Owners()
    owners.streams.add(SubscribeStream("transactions", (A,)), None, False)
    reply = Reply()
    owners.streams.unsubscribe(UnsubscribeStream("transactions", reply), None, False)
    error = ManagedSessionError("closed", "shut down")
    owners.streams.fail_pending(error)
    assert reply.value is error


def test_a_first_link_of_a_fresh_stream_subscribes_live() -> None:
    owners = Owners()
    owners.streams.add(SubscribeStream("transactions", (A,)), None, False)
    assert owners.streams.replay_plan("transactions", 1, 100) == {}
