"""Start-up you can see, and errors no retry can fix fail fast with a hint: every retry is
a line with its cause, number and next delay; a refused server ends after the start-up
budget (--startup-timeout, 15 s by default), TLS spoken to a plain server at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from actors import ManagedBacktestSession, ManagedSessionError
from actors.cli import build_parser
from protocol import CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support import ROOT

CLI = [sys.executable, "-m", "actors.cli", "run"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it now: connects are refused


def test_a_refused_server_ends_after_the_startup_budget_with_every_retry_shown() -> None:
    assert build_parser().parse_args(["run"]).startup_timeout == 15.0  # the default
    started = time.monotonic()
    result = subprocess.run([*CLI, "--url", f"ws://127.0.0.1:{closed_port()}", "--api-key",
                             "k", "--start-slot", "1", "--startup-timeout", "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert took < 10, took
    retries = [line for line in result.stderr.splitlines() if line.startswith("connecting:")]
    assert retries and retries[0].startswith(
        "connecting: attempt 1 failed (connect failed: ConnectionRefusedError")
    assert all("; next try in " in line for line in retries)
    assert result.stderr.splitlines()[-1].startswith(
        "backtest-actors run: session not created: create: no session within 2s")
    assert "--startup-timeout" in result.stderr


def test_tls_spoken_to_a_plain_server_fails_at_once_with_a_hint() -> None:
    with LocalSimulator() as sim:
        first, _ = sim.available_range()
        url = sim.url.replace("ws://", "wss://")
        started = time.monotonic()
        with pytest.raises(ManagedSessionError) as caught:
            ManagedBacktestSession.start(url, DEFAULT_API_KEY, CreateSession(first, first + 5),
                                         timing=sim.timing, policy=sim.policy)
        assert time.monotonic() - started < 5
        assert caught.value.kind == "create"
        assert "for a plain server use ws://host:port" in caught.value.reason
        result = subprocess.run([*CLI, "--url", url, "--api-key", DEFAULT_API_KEY,
                                 "--start-slot", str(first)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1 and "use ws://host:port" in result.stderr


def test_the_start_timeout_option_is_checked_before_anything_connects() -> None:
    with pytest.raises(ValueError, match="start_timeout: expected seconds > 0 or None"):
        ManagedBacktestSession.start("ws://127.0.0.1:1/backtest", "k", CreateSession(1, 2),
                                     start_timeout=0)


def test_a_url_run_without_addresses_says_it_delivers_slots_only() -> None:
    with LocalSimulator() as sim:
        first, _ = sim.available_range()
        result = subprocess.run([*CLI, "--url", sim.url, "--api-key", DEFAULT_API_KEY,
                                 "--start-slot", str(first), "--slot-count", "20"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ("note: no --transactions and no --account-diffs: this run delivers slots and "
            "statuses only") in result.stderr


def test_ctrl_c_while_starting_says_so_in_one_line_without_a_traceback() -> None:
    import signal

    proc = subprocess.Popen([*CLI, "--url", f"ws://127.0.0.1:{closed_port()}", "--api-key",
                             "k", "--start-slot", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # a retry line: it is starting, its handler is in place
    assert first.startswith("connecting: attempt 1 failed"), first
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in rest
    assert rest.rstrip().splitlines()[-1] == ("backtest-actors run: interrupted before the "
                                              "session existed")
