"""The ``backtest-actors`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket

from protocol.simulator.chain import Chain

COMMAND = [sys.executable, "-m", "actors.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def table_value(stdout: str, row: str) -> str:
    match = re.search(rf"│ {re.escape(row)}\s*│\s*(.*?)\s*│", stdout)
    assert match, f"no row {row!r} in:\n{stdout}"
    return match.group(1)


def test_default_run_completes_200_plus_slots() -> None:
    started = time.monotonic()
    result = run("run")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    assert table_value(result.stdout, "result") == "completed"
    assert table_value(result.stdout, "slots done") == "300/300"
    assert int(table_value(result.stdout, "blocks executed").split()[0]) >= 200
    assert table_value(result.stdout, "duplicates delivered") == "0"
    assert "\r" not in result.stderr  # piped: plain lines
    assert re.search(r"progress …\w{8}: 300/300 slots \(100\.0%\)", result.stderr)


def test_chaos_run_recovers_with_zero_duplicates() -> None:
    result = run("run", "--chaos", "--seed", "3")
    assert result.returncode == 0, result.stderr
    reconnects = sum(int(table_value(result.stdout, f"reconnects: {name}"))
                     for name in ("control", "transactions", "account_diffs"))
    assert reconnects > 0
    assert table_value(result.stdout, "duplicates delivered") == "0"


def test_out_jsonl_has_one_line_per_event_and_matches_the_chain(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = run("run", "--slot-count", "120", "--advance", "3", "--seed", "4",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    journal = [json.loads(line) for line in lines]
    # The journal: a header, then the events, with a write-ahead ContinueSent
    # line before each continue.
    assert journal[0]["type"] == "JournalHeader"
    records = [r for r in journal[1:] if r["type"] != "ContinueSent"]
    assert len(records) == int(table_value(result.stdout, "events"))
    chain = Chain(4, 2000)
    first, _ = chain.available_range()
    expected = chain.expected(first, first + 119, transactions=chain.addresses[:2],
                              account_diffs=chain.addresses[2:4])
    assert [r["slot"] for r in records if r["type"] == "Slot"] == expected.slots
    assert [r["signature"] for r in records if r["type"] == "Transaction"] == (
        expected.signatures)
    assert [(r["signature"], r["account"]) for r in records if r["type"] == "AccountDiff"
            ] == expected.diff_keys
    assert records[-1]["type"] == "Completed"


@pytest.mark.parametrize("args,message", [
    (["run", "--slot-count", "-1"], "--slot-count: expected a number >= 1, got -1"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "--url", "sim.example.com"], "--url needs --api-key or $BACKTEST_API_KEY"),
    (["run", "--url", "http://x", "--api-key", "k"], "--url: url: scheme must be ws or wss"),
    (["run", "--chaos", "--url", "ws://x", "--api-key", "k"], "--chaos works only"),
    (["run", "--start-slot", "400000500", "--end-slot", "400000400"], "before the start"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args, timeout=20)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_progress_line_on_a_terminal() -> None:
    """Run under a pseudo-terminal and read what a person would see."""
    leader, follower = pty.openpty()
    env = {**ENV, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen([*COMMAND, "run", "--slot-count", "400"], stdin=follower,
                            stdout=follower, stderr=follower, env=env)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert proc.returncode == 0
    assert "\r" in text or "\x1b[" in screen.decode("utf-8", "replace")  # redrawn in place
    assert re.search(r"…\w{8}", text)  # session id tail
    assert re.search(r"400/400 slots\s+100%", text)
    assert re.search(r"\d+/s", text) and "events" in text and "reconnects" in text
    assert "duplicates delivered" in text


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "protocol.simulator", "--port", "0"],
    [*COMMAND, "simulator", "--port", "0"],
])
def test_standalone_simulator_logs_and_stops_on_ctrl_c(command: list[str]) -> None:
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    url = ""
    for line in proc.stderr:
        if match := re.search(r"serving (ws://\S+/backtest)", line):
            url = match.group(1)
            break
    ws = websocket.create_connection(url, header={"X-API-Key": "local-dev-key"}, timeout=5)
    ws.send('{"method":"createBacktestSession","params":{"startSlot":400000000,'
            '"endSlot":400000003}}')
    while "readyForContinue" not in ws.recv():
        pass
    ws.close()
    proc.send_signal(signal.SIGINT)
    log = proc.stderr.read()
    assert proc.wait(timeout=10) == 0
    assert "control connection from" in log
    assert re.search(r"session backtest_\S+ created for slots 400000000\.\.=400000003", log)
    assert "control connection closed" in log


def test_a_wrong_url_shows_its_first_retry_within_2s() -> None:
    started = time.monotonic()
    proc = subprocess.Popen([*COMMAND, "run", "--url", "ws://127.0.0.1:1", "--api-key", "k",
                             "--start-slot", "1"], stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        elapsed = time.monotonic() - started
        assert re.match(r"connecting: attempt 1 failed \(connect failed: .*refused.*\); "
                        r"next try in [\d.]+s", line), line
        assert elapsed < 2.0
    finally:
        proc.kill()
        proc.wait(5)
