"""What a newcomer stumbled on at the command line (issue 14), run as a user runs it."""

from __future__ import annotations

import fcntl
import json
import math
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

from actors.cli import build_parser
from protocol.simulator import LocalSimulator
from protocol.simulator.chain import Chain
from tests.actors.cli.test_run import COMMAND, ENV, run, table_value
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


@pytest.mark.parametrize("args,message", [
    (["--start-slot", "5"], "--start-slot 5: the embedded simulator holds slots "
                            "400000000..=400001999"),
    (["--end-slot", "400009999"], "--end-slot 400009999: the embedded simulator holds slots "
                                  "up to 400001999"),
    (["--transactions", "ADDR"], "--transactions: expected a base58 public key"),
    (["--account-diffs", "11111111111111111111111111111111"],
     "--account-diffs 11111111111111111111111111111111: not an address of the embedded "
     "simulator (seed 0); see 'backtest-actors simulator --list-addresses --seed 0'"),
])
def test_bad_ranges_and_addresses_one_rule(args: list[str], message: str) -> None:
    result = run("run", *args, timeout=20)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"backtest-actors run: {message}"] or (
        message in result.stderr and len(result.stderr.strip().splitlines()) == 1), (
        result.stderr)


def test_a_range_with_no_block_is_refused() -> None:
    chain = Chain(0)
    skipped = next(s for s in range(FIRST, chain.last_slot) if not chain.produced_in(s, s))
    result = run("run", "--start-slot", str(skipped), "--end-slot", str(skipped), timeout=20)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"backtest-actors run: slots {skipped}..={skipped} hold no "
                             f"produced block\n")


def test_against_a_server_bad_addresses_send_nothing_and_a_bad_range_exits_2() -> None:
    with LocalSimulator(seed=0) as sim:
        common = ["run", "--url", sim.url, "--api-key", "local-dev-key"]
        result = run(*common, "--start-slot", str(FIRST), "--transactions", "ADDR",
                     timeout=20)
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1
        assert sim.upgrade_requests() == {}  # nothing was sent
        # The server alone knows its range: its bundleNotFound is the same mistake.
        result = run(*common, "--start-slot", "5", "--slot-count", "300", timeout=30)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == ("backtest-actors run: slots 5..=304: the server has no "
                                 "blocks for this range (bundleNotFound)\n")


def expected_repeats(chain: Chain, start: int, end: int, addresses: tuple[str, ...]) -> int:
    """Notifications beyond the first of each transaction matching several addresses."""
    return sum(max(0, len(set(tx.mentions) & set(addresses)) - 1)
               for slot in chain.produced_in(start + 1, end) for tx in chain.block(slot))


def test_json_summary_counts_exactly_and_quiet_stderr(tmp_path: Path) -> None:
    result = run("run", "--json", "--slot-count", "1000", "--advance", "10", "--seed", "5",
                 "--out", str(tmp_path / "j.jsonl"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --json: no progress
    doc = json.loads(result.stdout)
    chain = Chain(5)
    end = FIRST + 999
    tx, diffs = chain.addresses[:2], chain.addresses[2:4]
    expected = chain.expected(FIRST, end, transactions=tx, account_diffs=diffs)
    blocks = len(expected.slots) - 1
    assert doc["result"] == "completed" and doc["exit_code"] == 0
    assert doc["range_slots"] == doc["range_slots_done"] == 1000
    assert doc["blocks_executed"] == blocks == doc["server"]["blocks_executed"]
    assert doc["slot_events"] == len(expected.slots)
    assert doc["transactions"] == len(expected.signatures)
    assert doc["account_diffs"] == len(expected.diff_keys)
    assert doc["replays_dropped"] == 0 and doc["duplicates_delivered"] == 0
    assert doc["address_repeats_dropped"] == expected_repeats(chain, FIRST, end, tx) > 0
    assert doc["reconnects"] == {"control": 0, "transactions": 0, "account_diffs": 0}
    # --advance counts blocks: one ReadyForContinue per continue, ceil(blocks / 10).
    records = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    readies = sum(r["type"] == "ReadyForContinue" for r in records)
    assert readies == math.ceil(blocks / 10) < 100


def test_quiet_prints_the_summary_only() -> None:
    result = run("run", "--quiet", "--slot-count", "50")
    assert result.returncode == 0
    assert result.stderr == ""
    assert table_value(result.stdout, "result") == "completed"
    assert re.search(r"50 slots held \d+ produced blocks: a slot with no block is skipped",
                     result.stdout)


def test_the_summary_names_slots_and_blocks_and_splits_duplicates() -> None:
    result = run("run", "--slot-count", "300")
    assert result.returncode == 0
    chain = Chain(0)
    end = FIRST + 299
    blocks = len(chain.produced_in(FIRST + 1, end))
    assert table_value(result.stdout, "slots done") == "300/300"
    assert table_value(result.stdout, "blocks executed") == f"{blocks} (+1 start slot)"
    assert f"300 slots held {blocks} produced blocks: a slot with no block is skipped" in (
        result.stdout)
    assert table_value(result.stdout, "replays dropped") == "0"
    assert table_value(result.stdout, "same tx, other address") == str(
        expected_repeats(chain, FIRST, end, chain.addresses[:2]))


def test_help_names_blocks_and_every_simulator_option_is_explained() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    run_parser = sub.choices["run"]  # type: ignore[attr-defined]
    advance = next(a for a in run_parser._actions if a.dest == "advance")  # noqa: SLF001
    assert advance.help is not None and "produced blocks" in advance.help
    simulator = sub.choices["simulator"]  # type: ignore[attr-defined]
    options = [a for a in simulator._actions if a.option_strings]  # noqa: SLF001
    assert len(options) >= 10
    for action in options:
        assert action.help, action.option_strings


@pytest.mark.parametrize("command", [[*COMMAND, "simulator"],
                                     [*COMMAND[:-1], "protocol.simulator"]])
def test_list_addresses(command: list[str]) -> None:
    result = subprocess.run([*command, "--list-addresses", "--seed", "3"], capture_output=True,
                            text=True, timeout=20, env=ENV)
    assert result.returncode == 0
    assert tuple(result.stdout.split()) == Chain(3).addresses
    assert result.stderr == "seed 3: slots 400000000..=400001999\n"


def test_the_simulator_logs_its_addresses_at_start_up() -> None:
    proc = subprocess.Popen([*COMMAND, "simulator", "--port", "0", "--seed", "4"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or "addresses (seed" not in lines[-1]:  # bounded by pytest-timeout
            line = proc.stderr.readline()
            assert line, lines
            lines.append(line)
        assert any("serving ws://" in line for line in lines[:-1])
        assert lines[-1].rstrip().endswith(f"addresses (seed 4): {' '.join(Chain(4).addresses)}")
    finally:
        proc.terminate()
        proc.wait(10)
