"""Ctrl-C during a run: the first closes cleanly and prints the summary (exit 130), the
second exits at once. Driven through a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.simulator import LocalSimulator
from protocol.simulator.chain import Chain
from tests.actors.cli.test_run import COMMAND, ENV, table_value
from tests.support.harness import wait_for

FIRST = Chain(0).first_slot


class Terminal:
    """The CLI on a pseudo-terminal that is its controlling terminal: Ctrl-C is the byte
    0x03 typed on it, turned into SIGINT by the terminal, as for a person."""

    def __init__(self, args: list[str]) -> None:
        self.leader, follower = pty.openpty()
        env = {**ENV, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}

        def controlling_terminal() -> None:  # runs in the child, after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([*COMMAND, *args], stdin=follower, stdout=follower,
                                     stderr=follower, env=env, start_new_session=True,
                                     preexec_fn=controlling_terminal)
        os.close(follower)
        self.screen = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.screen += chunk

    def ctrl_c(self) -> None:
        os.write(self.leader, b"\x03")

    def text(self) -> str:
        with self.lock:
            raw = self.screen.decode("utf-8", "replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(10)
        os.close(self.leader)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def journal_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_ctrl_c_closes_cleanly_prints_the_summary_and_exits_130(
        tmp_path: Path, terminal: list[Terminal]) -> None:
    out = tmp_path / "events.jsonl"
    graceful_close = LocalSimulator().timing.graceful_close  # what the embedded run uses
    t = Terminal(["run", "--slot-count", "1900", "--out", str(out)])
    terminal.append(t)
    wait_for(lambda: len(journal_lines(out)) > 300, 30, "the run to be under way")
    t.ctrl_c()
    pressed = time.monotonic()
    rc = t.proc.wait(timeout=graceful_close + 5)
    elapsed = time.monotonic() - pressed
    t.reader.join(5)
    assert rc == 130
    assert elapsed < graceful_close + 1, elapsed
    text = t.text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "interrupted: closing the session" in text
    assert table_value(text, "result") == "interrupted"
    # The journal is complete up to the interruption: every line whole, one per event
    # the run counted, and the run did not reach its end.
    records = [json.loads(line) for line in journal_lines(out)]
    assert records[0]["type"] == "JournalHeader"
    events = [r for r in records[1:] if r["type"] != "ContinueSent"]
    assert len(events) == int(table_value(text, "events"))
    assert not any(r["type"] == "Completed" for r in events)
    chain = Chain(0)
    expected = chain.expected(FIRST, FIRST + 1899).slots
    slots = [r["slot"] for r in events if r["type"] == "Slot"]
    assert slots == expected[:len(slots)] and len(slots) < len(expected)


def test_a_second_ctrl_c_exits_at_once(terminal: list[Terminal]) -> None:
    """The first Ctrl-C starts a graceful close that cannot finish (the control connection
    is blackholed, the close waits its 10 s); the second exits at once."""
    with LocalSimulator(seed=2) as sim:
        first, _ = sim.available_range()
        t = Terminal(["run", "--url", sim.url, "--api-key", "local-dev-key", "--start-slot",
                      str(first), "--slot-count", "1900"])
        terminal.append(t)
        wait_for(lambda: sim.session_ids(), 30, "the session")
        sid = sim.session_ids()[0]
        wait_for(lambda: sim.session_stats(sid).blocks_executed > 20, 30, "the run under way")
        sim.faults.blackhole("control")
        t.ctrl_c()
        wait_for(lambda: "interrupted: closing the session" in t.text(), 10, "the first stop")
        t.ctrl_c()
        pressed = time.monotonic()
        rc = t.proc.wait(timeout=5)
        assert rc == 130
        # Without the second one the close would wait for its 10 s bound.
        assert time.monotonic() - pressed < 1.0
