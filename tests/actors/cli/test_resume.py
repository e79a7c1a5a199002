"""Sessions outlive the process: cursor, attach, crash-resume (the cursor: actors/DESIGN.md).

Every kill here is a SIGKILL of a separate process (no close frame, no
``closeBacktestSession``): the server keeps the session for its disconnect
timeout and the next process resumes it from a cursor or a journal.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actors import (
    AccountDiff,
    Completed,
    Cursor,
    CursorError,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    Slot,
    Transaction,
)
from actors.decisions.cursor import PendingContinue, StreamCursor
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support import ROOT
from tests.support.harness import FAST, QUICK_RETRY, check_exact, drive, wait_for
from tests.support.sweep_checks import check_journal

OTHER_KEY = "another-key"


pytestmark = pytest.mark.backtest_simulator(seed=13, slots=400, extra_api_keys=(OTHER_KEY,))


def events_from_records(path: Path) -> list[ManagedEvent]:
    """The delivered events a journal line stands for (what check_exact looks at)."""
    events: list[ManagedEvent] = []
    for line in path.read_text().splitlines():
        record: dict[str, Any] = json.loads(line)
        kind = record["type"]
        if kind == "Slot":
            events.append(Slot(record["slot"]))
        elif kind == "Transaction":
            events.append(Transaction(record["slot"], record["signature"]))
        elif kind == "AccountDiff":
            events.append(AccountDiff(record["slot"], record["account"], record["signature"]))
        elif kind == "Completed":
            events.append(Completed(record["summary"]))
    return events


# --- the cursor as a value ----------------------------------------------------------------


def sample_cursor() -> Cursor:
    return Cursor(
        url="ws://127.0.0.1:1/backtest", session_id="s-1", rpc_endpoint="http://127.0.0.1:1/rpc",
        start_slot=10, end_slot=20, last_seq=7,
        streams={"transactions": StreamCursor(("A", "B"), {"A": 12, "B": 12}, 12,
                                              frozenset({"sig1"})),
                 "account_diffs": StreamCursor(("C",), {"C": 11}, 11,
                                               frozenset({("sig2", "C")}))},
        pending_continue=PendingContinue(ContinueParams(advance_count=3), 7))


def test_cursor_json_round_trip() -> None:
    cursor = sample_cursor()
    assert Cursor.from_json(cursor.to_json()) == cursor
    idle = Cursor("ws://h/backtest", "s", "http://h", 1, 2)
    assert Cursor.from_json(idle.to_json()) == idle
    assert "apikey" not in cursor.to_json().lower()


@pytest.mark.parametrize("mutate,field", [
    (lambda d: "not json {", "document"),
    (lambda d: json.dumps({"type": "Slot", "slot": 3}), "format"),
    (lambda d: json.dumps({**d, "version": 99}), "version"),
    (lambda d: json.dumps({**d, "lastSeq": "7"}), "lastSeq"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "sessionId"}), "sessionId"),
    (lambda d: json.dumps({**d, "streams": {"blocks": {}}}), "streams.blocks"),
    (lambda d: json.dumps({**d, "continue": {"params": {"x": 1}, "writeSeq": 1}}),
     "continue.params"),
])
def test_a_corrupt_or_foreign_cursor_names_the_field(mutate: Any, field: str) -> None:
    doc = json.loads(sample_cursor().to_json())
    with pytest.raises(CursorError) as raised:
        Cursor.from_json(mutate(doc))
    assert raised.value.field == field
    assert field in str(raised.value)


# --- the library: kill -9, then attach ------------------------------------------------------


def run_driver(sim: LocalSimulator, start: int, end: int, tx: list[str], diffs: list[str],
               kill_after: int, cursor: Path, events: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.resume_driver", sim.url, str(start), str(end),
         ",".join(tx), ",".join(diffs), str(kill_after), str(cursor), str(events)],
        cwd=ROOT, capture_output=True, text=True, timeout=40)
    assert proc.returncode == -9, proc.stderr  # it died by SIGKILL, after the cursor


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_then_attach_from_the_cursor_delivers_exactly_once(
        sim: LocalSimulator, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    first, _ = sim.available_range()
    end = first + 120
    tx, diffs = list(sim.addresses[:2]), list(sim.addresses[2:4])
    expected = sim.expected(first, end, transactions=tx, account_diffs=diffs)
    cursor_path, events_path = tmp_path / "cursor.json", tmp_path / "events.jsonl"
    # Two processes, each killed after a random number of events; the second attached.
    run_driver(sim, first, end, tx, diffs, rng.randrange(5, 150), cursor_path, events_path)
    run_driver(sim, first, end, tx, diffs, rng.randrange(5, 150), cursor_path, events_path)
    cursor = Cursor.from_json(cursor_path.read_text())
    session = ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, cursor, timing=FAST,
                                           policy=QUICK_RETRY)
    try:
        assert session.session_info.session_id == cursor.session_id
        rest = drive(session, timeout=15)
        stats = session.stats()
    finally:
        session.shutdown()
    check_exact(events_from_records(events_path) + rest, expected)
    assert stats["double_advances"] == 0
    server = sim.session_stats(cursor.session_id)
    assert server.blocks_executed == len(expected.slots) - 1


def test_attach_to_an_unknown_session_is_a_typed_error(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    cursor = Cursor(sim.url, "no-such-session", "http://127.0.0.1:1", first, first + 10)
    with pytest.raises(ManagedSessionError) as raised:
        ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, cursor, timing=FAST,
                                      policy=QUICK_RETRY)
    assert raised.value.kind == "attach"
    assert "sessionNotFound" in str(raised.value)


def test_attach_with_another_key_is_a_typed_error(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                           CreateSession(first, first + 10),
                                           timing=FAST, policy=QUICK_RETRY)
    try:
        session.subscribe_transactions(list(sim.addresses[:1]))
        # Up: acknowledged, so the server counts this session's own subscriber.
        wait_for(lambda: type(session.status()["transactions"]).__name__ == "Up", 10,
                 "the session's own subscription up")
        cursor = session.cursor()
        sid = session.session_info.session_id
        with pytest.raises(ManagedSessionError) as raised:
            ManagedBacktestSession.attach(sim.url, OTHER_KEY, cursor, timing=FAST,
                                          policy=QUICK_RETRY)
        assert raised.value.kind == "attach"
        assert "sessionOwnerMismatch" in str(raised.value)
        stats = sim.session_stats(sid)
        assert stats.continues_received == 0
        assert stats.subscribers == 1  # this session's own: the failed attach subscribed nothing
    finally:
        session.shutdown()


# --- the CLI: kill -9 three times, resume from the journal ----------------------------------

CLI = [sys.executable, "-m", "actors.cli"]
CLI_ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}


def journal_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "run", *args], cwd=ROOT, env=CLI_ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


STANDALONE = {"seed": 5, "slots": 800}  # the standalone fixture's simulator


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", [99, 3])
def test_cli_killed_three_times_resumes_to_an_exact_journal(standalone: str, tmp_path: Path,
                                                            seed: int) -> None:
    from protocol.simulator.chain import Chain
    from tests.support.harness import wait_for

    chain = Chain(5, 800)
    first, _ = chain.available_range()
    end = first + 499
    tx, diffs = list(chain.addresses[:2]), list(chain.addresses[2:4])
    expected = chain.expected(first, end, transactions=tx, account_diffs=diffs)
    journal = tmp_path / "j.jsonl"
    key = ["--api-key", DEFAULT_API_KEY, "--continue-quiet", "0.5"]
    rng = random.Random(seed)
    total_lines = len(expected.slots) + len(expected.signatures) + len(expected.diff_keys)
    proc = start_cli("--url", standalone, *key, "--start-slot", str(first), "--slot-count",
                     "500", "--advance", "1", *sum((["--transactions", a] for a in tx), []),
                     *sum((["--account-diffs", a] for a in diffs), []), "--out", str(journal))
    for kill in range(3):
        target = line_count(journal) + rng.randrange(1, total_lines // 5)
        wait_for(lambda t=target, p=proc: line_count(journal) >= t or p.poll() is not None, 60,
                 f"the journal to reach {target} lines (kill {kill + 1})")
        assert proc.poll() is None, f"the run ended before kill {kill + 1}: {proc.stderr}"
        proc.kill()  # SIGKILL
        proc.wait(timeout=10)
        proc = start_cli("--resume", str(journal), *key)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    records = journal_records(journal)
    assert records[0]["type"] == "JournalHeader" and "apiKey" not in records[0]
    assert DEFAULT_API_KEY not in journal.read_text()
    assert [r["slot"] for r in records if r["type"] == "Slot"] == expected.slots
    txs = [r for r in records if r["type"] == "Transaction"]
    diff_records = [r for r in records if r["type"] == "AccountDiff"]
    assert sorted(r["signature"] for r in txs) == sorted(expected.signatures)
    assert sorted((r["signature"], r["account"]) for r in diff_records) == sorted(
        expected.diff_keys)
    assert [r["slot"] for r in txs] == sorted(r["slot"] for r in txs)
    assert [r["slot"] for r in diff_records] == sorted(r["slot"] for r in diff_records)
    completed = [r for r in records if r["type"] == "Completed"]
    assert len(completed) == 1
    assert completed[0]["summary"]["blocks_executed"] == len(expected.slots) - 1


# --- the CLI: bad input -------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "run", *args], cwd=ROOT, env=env or CLI_ENV, text=True,
                          capture_output=True, timeout=60)


def header_line(url: str, session_id: str, first: int, embedded: bool = False) -> str:
    from actors.cli.journal import JournalHeader

    return JournalHeader(url, session_id, "http://127.0.0.1:1/rpc", first, first + 10,
                         ("H8mmx6sRhWyq2X89MiYgVwxDXHMSTkRDeXqqhZuUMJUW",), (), 1,
                         embedded).to_line() + "\n"


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ('{"type": "Slot", "slot": 1}\n', "not a backtest-actors journal"),
    ("hello world\n", "not a backtest-actors journal"),
    ("HEADER" + '{"seq": 1, "type": "Slot", "slot": 3}\n' + "{broken\n"
     + '{"seq": 2, "type": "Slot", "slot": 4}\n', "corrupt at line 3"),
])
def test_cli_resume_refuses_a_corrupt_or_foreign_journal(sim: LocalSimulator, tmp_path: Path,
                                                        content: str, message: str) -> None:
    journal = tmp_path / "j.jsonl"
    first, _ = sim.available_range()
    journal.write_text(content.replace("HEADER", header_line(sim.url, "s", first)))
    before = journal.read_bytes()
    result = run_cli("--resume", str(journal), "--api-key", DEFAULT_API_KEY)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert journal.read_bytes() == before  # nothing appended


def test_cli_resume_of_an_unknown_session_or_another_key(sim: LocalSimulator,
                                                         tmp_path: Path) -> None:
    first, _ = sim.available_range()
    journal = tmp_path / "j.jsonl"
    journal.write_text(header_line(sim.url, "no-such-session", first))
    before = journal.read_bytes()
    result = run_cli("--resume", str(journal), "--api-key", DEFAULT_API_KEY)
    assert result.returncode == 1
    assert "cannot be resumed" in result.stdout + result.stderr
    assert "sessionNotFound" in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert journal.read_bytes() == before
    # A real session of this key, resumed with another: the owner check refuses it.
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                           CreateSession(first, first + 10), timing=FAST,
                                           policy=QUICK_RETRY)
    try:
        journal.write_text(header_line(sim.url, session.session_info.session_id, first))
        before = journal.read_bytes()
        result = run_cli("--resume", str(journal), env={**CLI_ENV,
                                                        "BACKTEST_API_KEY": OTHER_KEY})
        assert result.returncode == 1
        assert "sessionOwnerMismatch" in result.stdout + result.stderr
        assert journal.read_bytes() == before
    finally:
        session.shutdown()


def test_cli_resume_of_an_embedded_run_says_it_cannot(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_text(header_line("ws://127.0.0.1:1/backtest", "s", 1, embedded=True))
    result = run_cli("--resume", str(journal), "--api-key", "k")
    assert result.returncode == 2
    assert result.stderr.strip() == ("backtest-actors run: --resume: this journal is from the "
                                     "embedded simulator, which died with its process: it "
                                     "cannot be resumed")


def test_a_torn_last_line_is_ignored_and_cut_off(tmp_path: Path) -> None:
    from actors.cli.journal import read_journal

    journal = tmp_path / "j.jsonl"
    journal.write_text(header_line("ws://127.0.0.1:1/backtest", "s", 1)
                       + '{"seq":4,"type":"ReadyForContinue"}\n{"seq":5,"type":"Sl')
    state = read_journal(str(journal))
    assert state.cursor.last_seq == 4
    assert state.awaiting_continue
    assert state.valid_bytes == len(journal.read_bytes()) - len('{"seq":5,"type":"Sl')


# --- in one process: detach, attach ---------------------------------------------------------


def take(session: ManagedBacktestSession, count: int) -> list[ManagedEvent]:
    """``count`` events, answering each ReadyForContinue (advance 1)."""
    from actors import ReadyForContinue

    events = []
    for _ in range(count):
        event = session.next_event(timeout=15)
        events.append(event)
        if isinstance(event, ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=1), timeout=15)
    return events


@pytest.mark.timeout(90)
def test_detach_and_attach_at_random_points_delivers_exactly_once(sim: LocalSimulator) -> None:
    """Many resume points, each mid-batch: what the facade took but did not return is
    not in the cursor, so the attach delivers it again (and nothing else twice)."""
    rng = random.Random(7)
    first, _ = sim.available_range()
    end = first + 100
    tx, diffs = list(sim.addresses[:3]), list(sim.addresses[3:5])
    expected = sim.expected(first, end, transactions=tx, account_diffs=diffs)
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY, CreateSession(first, end),
                                           timing=FAST, policy=QUICK_RETRY)
    session.subscribe_transactions(tx)
    session.subscribe_account_diffs(diffs)
    events: list[ManagedEvent] = []
    for _ in range(5):
        events += take(session, rng.randrange(1, 120))
        cursor = Cursor.from_json(session.cursor().to_json())
        session.detach()
        assert session.cursor() == cursor  # still answers, unchanged, after detaching
        session = ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, cursor, timing=FAST,
                                                policy=QUICK_RETRY)
    try:
        events += drive(session, timeout=15)
    finally:
        session.shutdown()
    check_exact(events, expected)
    assert sim.session_stats(cursor.session_id).blocks_executed == len(expected.slots) - 1


@pytest.mark.timeout(60)
def test_a_continue_the_server_never_got_is_resent_after_the_quiet_window(
        sim: LocalSimulator) -> None:
    """The cursor holds a continue as sent (write-ahead) that never reached the wire: after
    the attach, nothing newer than its write point comes, so it is judged lost and resent."""
    import attrs

    from actors import ContinueLost, ReadyForContinue

    first, _ = sim.available_range()
    end = first + 30
    tx = list(sim.addresses[:2])
    expected = sim.expected(first, end, transactions=tx)
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY, CreateSession(first, end),
                                           timing=FAST, policy=QUICK_RETRY)
    session.subscribe_transactions(tx)
    events = take(session, 20)
    while not isinstance(event := session.next_event(timeout=15), ReadyForContinue):
        events.append(event)
    events.append(event)
    cursor = session.cursor()
    # As if the process died between writing the journal's ContinueSent and the socket.
    cursor = attrs.evolve(cursor, pending_continue=PendingContinue(
        ContinueParams(advance_count=1), cursor.last_seq))
    session.detach()
    resumed = ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, cursor, timing=FAST,
                                            policy=QUICK_RETRY)
    try:
        rest = drive(resumed, timeout=15)
        stats = resumed.stats()
    finally:
        resumed.shutdown()
    lost = [e for e in rest if isinstance(e, ContinueLost)]
    assert len(lost) == 1 and lost[0].resent
    assert stats["continues_resent"] == 1 and stats["double_advances"] == 0
    check_exact(events + rest, expected)
    assert sim.session_stats(cursor.session_id).blocks_executed == len(expected.slots) - 1


@pytest.mark.timeout(60)
def test_a_listener_sessions_cursor_moves_as_events_are_told(sim: LocalSimulator) -> None:
    """A listener's cursor counts each event as it is told; resumed after the listener
    stopped continuing (paused at a ReadyForContinue), the run completes exactly once."""
    import threading

    import pykka

    from actors import ReadyForContinue, SendContinue
    from tests.support.harness import wait_for

    first, _ = sim.available_range()
    end = first + 40
    tx = list(sim.addresses[:2])
    expected = sim.expected(first, end, transactions=tx)
    got: list[ManagedEvent] = []
    lock = threading.Lock()

    class Listener(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.supervisor: Any = None
            self.ready = False

        def on_receive(self, message: Any) -> Any:
            if isinstance(message, pykka.ActorRef):
                self.supervisor = message
            else:
                with lock:
                    got.append(message)
                self.ready = self.ready or isinstance(message, ReadyForContinue)
            slots = sum(isinstance(e, Slot) for e in got)
            if self.ready and self.supervisor is not None and slots < 15:
                self.ready = False
                self.supervisor.tell(SendContinue(ContinueParams(advance_count=1)))
            return None

    listener = Listener.start()
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY, CreateSession(first, end),
                                           timing=FAST, policy=QUICK_RETRY, listener=listener)
    try:
        session.subscribe_transactions(tx)
        listener.tell(session.supervisor)
        def paused() -> bool:
            # A Ready after the last Slot (items of that slot may still come after it).
            with lock:
                events = list(got)
            last_slot = max((i for i, e in enumerate(events) if isinstance(e, Slot)),
                            default=-1)
            return sum(isinstance(e, Slot) for e in events) >= 15 and any(
                isinstance(e, ReadyForContinue) for e in events[last_slot + 1:])

        wait_for(paused, 15, "the listener to pause")
        # And nothing more comes (the last slot's items may trail its Ready).
        seen: list[tuple[float, int]] = []

        def quiet() -> bool:
            now = (time.monotonic(), len(got))
            if seen and seen[-1][1] != now[1]:
                seen.clear()
            seen.append(now)
            return now[0] - seen[0][0] >= 0.3

        wait_for(quiet, 10, "the listener's events to stop")
        cursor = session.cursor()
        assert cursor.pending_continue is None
        session.detach()
        assert session.cursor() == cursor
    finally:
        session.shutdown()
        listener.stop()
    resumed = ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, cursor, timing=FAST,
                                            policy=QUICK_RETRY)
    try:
        resumed.send_continue(ContinueParams(advance_count=1), timeout=15)  # it was paused
        rest = drive(resumed, timeout=15)
    finally:
        resumed.shutdown()
    check_exact(got + rest, expected)


def test_attach_checks_its_arguments_before_connecting(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    bad = Cursor(sim.url, "s", "http://127.0.0.1:1", first, first + 5,
                 streams={"transactions": StreamCursor(("not an address",),
                                                       {"not an address": first}, -1)})
    with pytest.raises(ValueError, match="addresses"):
        ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, bad)
    with pytest.raises(TypeError, match="cursor: expected Cursor"):
        ManagedBacktestSession.attach(sim.url, DEFAULT_API_KEY, "{}")  # type: ignore[arg-type]


def test_resume_with_a_continue_in_flight_says_why_it_waits_and_ends_exact(
        sim: LocalSimulator, tmp_path: Path) -> None:
    """A run killed right after it wrote a continue ahead into its journal: the resume
    may have to wait for the lost-continue rule, so it says so at once, then finishes
    with the same journal a clean run writes."""
    first, _ = sim.available_range()
    journal = tmp_path / "j.jsonl"
    key = ["--api-key", DEFAULT_API_KEY]
    proc = start_cli("--url", sim.url, *key, "--start-slot", str(first), "--slot-count", "200",
                     "--advance", "1", "--out", str(journal))
    try:
        wait_for(lambda: line_count(journal) > 80 or proc.poll() is not None, 60,
                 "the run to be under way")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    lines = journal.read_text().splitlines(keepends=True)
    # Cut the journal right after its last ContinueSent: as if killed between the
    # continue's write-ahead record and any of its answers (every continue the run sent
    # is in the journal: it is written before the continue is handed over).
    cut = max(i for i, line in enumerate(lines) if '"ContinueSent"' in line)
    journal.write_text("".join(lines[:cut + 1]))
    started = time.monotonic()
    resumed = subprocess.Popen([*CLI, "run", "--resume", str(journal), *key,
                                "--continue-quiet", "0.5"], cwd=ROOT, env=CLI_ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert resumed.stderr is not None and resumed.stdout is not None
    first_line = resumed.stderr.readline()
    said_after = time.monotonic() - started
    rest = resumed.stderr.read()
    assert resumed.wait(timeout=60) == 0, first_line + rest + resumed.stdout.read()
    assert first_line.startswith("resume: waiting up to 0.5 s for the server to confirm the "
                                 "last continue"), first_line
    assert said_after < 5.0  # process start and the attach, then the line at once
    check_journal(journal, sim.chain, DEFAULT_API_KEY)


def test_resume_of_a_journal_that_does_not_exist_is_a_bad_argument(tmp_path: Path) -> None:
    result = run_cli("--resume", str(tmp_path / "nope.jsonl"), "--api-key", "k")
    assert result.returncode == 2
    path = tmp_path / "nope.jsonl"
    assert result.stderr == f"backtest-actors run: --resume {path}: no such journal\n"


def test_the_summary_after_resume_counts_the_whole_session(sim: LocalSimulator,
                                                           tmp_path: Path) -> None:
    """Blocks executed, transactions and account diffs of every process of the session, as
    the server counts them, not only the last process's."""
    first, _ = sim.available_range()
    journal = tmp_path / "j.jsonl"
    key = ["--api-key", DEFAULT_API_KEY]
    tx, diffs = sim.addresses[0], sim.addresses[2]
    proc = start_cli("--url", sim.url, *key, "--start-slot", str(first), "--slot-count", "300",
                     "--advance", "1", "--transactions", tx, "--account-diffs", diffs,
                     "--out", str(journal))
    try:
        wait_for(lambda: line_count(journal) > 150 or proc.poll() is not None, 60,
                 "the run to be under way")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    result = run_cli("--resume", str(journal), *key, "--continue-quiet", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = sim.expected(first, first + 299, transactions=[tx], account_diffs=[diffs])
    assert summary["blocks_executed"] == summary["server"]["blocks_executed"]
    assert summary["blocks_executed"] == len(expected.slots) - 1
    assert summary["transactions"] == len(expected.signatures)
    assert summary["account_diffs"] == len(expected.diff_keys)
