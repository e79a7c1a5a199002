"""``backtest-actors run`` arguments: bad ranges and addresses are one rule, one line and
exit 2, with nothing sent."""

from __future__ import annotations

import re
import time

import pytest

from actors.cli import main as cli_main
from protocol.simulator import LocalSimulator
from protocol.simulator.chain import Chain
from tests.actors.cli.test_run import run

FIRST = Chain(0).first_slot


@pytest.mark.parametrize("args,message", [
    (["--start-slot", "5"], "--start-slot 5: the embedded simulator holds slots "
                            "400000000..=400001999"),
    (["--end-slot", "400009999"], "--end-slot 400009999: the embedded simulator holds slots "
                                  "up to 400001999"),
    # The flag the user passed is the one named, with the way to a longer chain.
    (["--slot-count", "5000"], "--slot-count 5000: slots 400000000..=400004999: the embedded "
                               "simulator holds slots up to 400001999 (--chain-slots N makes "
                               "a longer chain)"),
    (["--url", "ws://127.0.0.1:9/backtest", "--api-key", "k", "--start-slot", "1",
      "--chain-slots", "3000"], "--chain-slots works only with the embedded simulator"),
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


VALID = "So11111111111111111111111111111111111111112"


def test_cli_refuses_a_bad_address_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and one line, as the README promises, before the simulator starts."""
    started = time.monotonic()
    code = cli_main(["run", "--transactions", VALID, "--account-diffs", "0xdeadbeef"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("backtest-actors run: --account-diffs: expected a base58 public key")
    assert err.count("\n") == 1
    assert time.monotonic() - started < 1.0


def test_chain_slots_makes_a_longer_embedded_chain() -> None:
    result = run("run", "--chain-slots", "2600", "--slot-count", "2500", "--advance", "100",
                 "--quiet", "--transactions", Chain(0).addresses[0])
    assert result.returncode == 0, result.stderr
    assert re.search(r"slots done\s*│\s*2500/2500", result.stdout), result.stdout
