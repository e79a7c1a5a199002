"""The inbox every actor of the library uses: ``queue.SimpleQueue``, closed at the end.

pykka's ``ThreadingActor`` gives each actor a ``queue.Queue``: a Python
class built on three ``Condition`` objects, whose ``put`` takes a lock and
notifies a condition in Python code, on the path of every ``tell``. An actor
inbox needs none of what those conditions are for (a bound, ``join``,
``task_done``); pykka asks only ``put``, ``get`` and ``empty`` of it (its
``ActorInbox`` protocol, with ``_create_actor_inbox`` as the hook for actor
types). ``SimpleQueue`` is exactly that, written in C.

What it buys, measured in ``scripts/bench.py``: a ``tell`` no longer runs
``Condition.notify`` in Python (the second entry of the managed path's
profile), and each actor keeps about 14 fewer objects for the garbage
collector to walk, which is what a full collection costs at 500 sessions in
one process. Delivery order and the actor loop are pykka's, unchanged.

One thing is added: an ``ask`` that reaches the inbox is answered, however
it races the actor's end. pykka checks that the actor is alive, then puts the
message; when the actor ends and empties its inbox between the two, the
message stays unread and its asker waits for ever (1 ask in 30,000 racing a
stop, in ``tests/actors/runtime/test_inbox.py``, once the put became this fast). Here the
inbox is closed when the actor ends, even when pykka's loop is left by a
``BaseException``, and a put into a closed inbox answers what it finds there,
as the actor's last act would have. (The one message being handled when a
handler raises a ``BaseException`` stays pykka's: it stops every actor, and
that message is not answered. The library's own handlers never raise one.)
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from pykka import messages as pykka_messages

if TYPE_CHECKING:
    from pykka._actor import ActorInbox


def _ignore(message: Any) -> None:
    """What pykka does with a told message left at the end: nothing."""


_simple_put = queue.SimpleQueue.put


class _Inbox(queue.SimpleQueue):  # type: ignore[type-arg]
    """A ``SimpleQueue`` that, once closed, answers whatever is put into it."""

    __slots__ = ("_ended", "_unhandled")

    def __init__(self) -> None:
        super().__init__()
        self._ended: str | None = None  # the ended actor's name, once closed
        self._unhandled: Callable[[Any], None] = _ignore

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        _simple_put(self, item)  # every tell: the C method itself, no super() lookup
        # Put, then read the flag; close() sets the flag, then drains: whichever
        # comes second finds the envelope (the GIL orders the two threads' steps).
        if self._ended is not None:
            self._answer_rest()

    def close(self, actor: str, unhandled: Callable[[Any], None] = _ignore) -> None:
        self._unhandled = unhandled
        self._ended = actor
        self._answer_rest()

    def _answer_rest(self) -> None:
        """What pykka's teardown does with what is left, without ever blocking."""
        while True:
            try:
                envelope = self.get_nowait()
            except queue.Empty:
                return
            reply = envelope.reply_to
            if reply is None:
                self._unhandled(envelope.message)  # a tell: the actor says what it leaves
                continue
            if isinstance(envelope.message, pykka_messages._ActorStop):  # noqa: SLF001
                reply.set(None)  # a stop request: the actor is stopped
            else:
                reply.set_exception(exc_info=(pykka.ActorDeadError, pykka.ActorDeadError(
                    f"{self._ended} stopped before handling the message"), None))


class SimpleInboxActor(pykka.ThreadingActor):
    """A ``ThreadingActor`` whose inbox is a ``queue.SimpleQueue``, closed at its end."""

    def on_unhandled(self, message: Any) -> None:
        """A told message left unhandled by this actor's end, or told after it.

        pykka drops those. An actor whose tells can carry their own answer (a
        future inside the message, waited for by its sender) overrides this to
        fail that answer, so its sender does not wait for ever. Runs on whichever
        thread closes or puts: it must touch the message only, never the actor.
        """

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return _Inbox()

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        finally:
            # pykka's loop lets a BaseException out (an on_stop that raises
            # SystemExit, on its path for BaseException), skipping the teardown:
            # the asks queued behind would wait for ever. Closing twice is harmless.
            self._close_inbox()

    def _actor_loop_teardown(self) -> None:
        # pykka's teardown empties the inbox once (and with a blocking get, which a
        # put answering its own envelope could leave waiting); closing it instead
        # also answers what arrives afterwards. Same answers as pykka's.
        self._close_inbox()

    def _close_inbox(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.close(str(self.actor_ref), self.on_unhandled)
