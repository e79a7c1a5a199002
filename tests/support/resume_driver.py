"""A process that drives a session and dies by SIGKILL right after persisting a cursor.

``python -m tests.support.resume_driver URL START END TX_ADDRS DIFF_ADDRS KILL_AFTER CURSOR EVENTS``
creates the session (or, when CURSOR exists, attaches from it), returns
``KILL_AFTER`` events to "the application" (each appended to EVENTS as a JSON
line), persists ``cursor()`` to CURSOR (atomically) and kills itself: no
shutdown, no close frame, exactly what kill -9 leaves behind.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from actors import Cursor, ManagedBacktestSession, ReadyForContinue
from protocol import ContinueParams, CreateSession
from protocol.codec import encode_record
from protocol.simulator import DEFAULT_API_KEY
from tests.support.harness import FAST, QUICK_RETRY


def main(argv: list[str]) -> None:
    url, start, end, tx, diffs, kill_after, cursor_path, events_path = argv
    cursor_file = Path(cursor_path)
    if cursor_file.exists():
        session = ManagedBacktestSession.attach(
            url, DEFAULT_API_KEY, Cursor.from_json(cursor_file.read_text()), timing=FAST,
            policy=QUICK_RETRY)
    else:
        session = ManagedBacktestSession.start(url, DEFAULT_API_KEY,
                                               CreateSession(int(start), int(end)),
                                               timing=FAST, policy=QUICK_RETRY)
        session.subscribe_transactions(tx.split(","))
        session.subscribe_account_diffs(diffs.split(","))
    with open(events_path, "a", encoding="utf-8") as out:
        for _ in range(int(kill_after)):
            event = session.next_event(timeout=15)
            out.write(encode_record(event) + "\n")
            if isinstance(event, ReadyForContinue):
                session.send_continue(ContinueParams(advance_count=1), timeout=15)
        out.flush()
        os.fsync(out.fileno())
    tmp = cursor_file.with_suffix(".tmp")
    tmp.write_text(session.cursor().to_json())
    os.replace(tmp, cursor_file)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
