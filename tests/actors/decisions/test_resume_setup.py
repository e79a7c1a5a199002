"""Setting the plain classes up for an attached session: the outbox and the pacer start
where the cursor says the application stands, and the session is named at once."""

from __future__ import annotations

import logging

from actors.decisions.cursor import Cursor, PendingContinue, StreamCursor
from actors.decisions.outbox import Outbox
from actors.decisions.pacer import ContinuePacer
from actors.decisions.resume_setup import prepare
from actors.events import SessionInfo
from actors.logs import SessionLogger
from actors.supervision.config import SessionConfig
from protocol import ContinueParams, CreateSession

LOG = logging.LoggerAdapter(logging.getLogger("test.resume_setup"), {})
CREATE = CreateSession(start_slot=100, end_slot=200)
PENDING = PendingContinue(ContinueParams(advance_count=4), write_seq=7)
CURSOR = Cursor("ws://h/backtest", "s-9", "/backtest/s-9", 100, 200, last_seq=9,
                streams={"transactions": StreamCursor(("A",), {"A": 150}, 150,
                                                      frozenset({"sig"}))},
                pending_continue=PENDING)


def test_a_created_session_is_named_by_the_server_later() -> None:
    outbox, pacer = Outbox(window=64, log=LOG), ContinuePacer()
    config = SessionConfig("ws://h/backtest", "key", CREATE)
    assert prepare(config, outbox, pacer, LOG) is None
    assert outbox.tracker is None and pacer.state == "idle"


def test_an_attached_session_starts_where_the_cursor_stands() -> None:
    outbox, pacer = Outbox(window=64, log=LOG), ContinuePacer()
    log = SessionLogger("test")
    config = SessionConfig("ws://h/backtest", "key", CREATE, resume=CURSOR)
    assert prepare(config, outbox, pacer, log) == SessionInfo("s-9", "/backtest/s-9")
    assert log.session_id == "s-9"  # every record names the session from the start
    assert pacer.state == "outstanding" and pacer.params == PENDING.params
    outbox.add_stream("transactions", ("A",))
    assert outbox.resumed("transactions")
    assert outbox.replay_cursor("transactions", "A") == 150


def test_a_listener_session_keeps_its_cursor_in_the_outbox() -> None:
    outbox = Outbox(window=64, log=LOG, listener=lambda message: True)
    config = SessionConfig("ws://h/backtest", "key", CREATE, resume=CURSOR)
    prepare(config, outbox, ContinuePacer(), SessionLogger("test"))
    assert outbox.tracker is not None
    assert outbox.tracker.cursor(CURSOR.info).last_seq == 9
