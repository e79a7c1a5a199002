"""The run's summary: the table and ``--json`` count exactly what was received, and
``--quiet`` prints the summary only."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

from protocol.simulator.chain import Chain
from tests.actors.cli.test_run import COMMAND, ENV, run, table_value
from tests.support import ROOT

FIRST = Chain(0).first_slot


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


def test_an_embedded_run_checks_its_delivery_against_the_simulator(tmp_path: Path) -> None:
    """The embedded simulator knows what the range holds: the summary says ``exact`` (or what
    differs, with exit code 1); against a server given by --url it cannot say."""
    result = subprocess.run([*COMMAND, "run", "--slot-count", "120", "--advance", "7",
                             "--json"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["delivery"] == "exact" and document["result"] == "completed"
    table = subprocess.run([*COMMAND, "run", "--slot-count", "60", "--quiet"], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert re.search(r"delivery vs expected\(\)\s*│\s*exact", table.stdout), table.stdout
