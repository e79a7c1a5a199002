"""Checks shared by the sweep tests: a session's journal against the chain's ``expected()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.simulator.chain import Chain

SEQUENCED = ("Slot", "Status", "ReadyForContinue")  # control events, each with its own seqId


def journal_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_journal(path: Path, chain: Chain, api_key: str = "") -> dict[str, Any]:
    """Exactly the chain's events for the header's range, each line once; the header."""
    records = journal_records(path)
    header = records[0]
    assert header["type"] == "JournalHeader", path
    if api_key:
        assert api_key not in path.read_text(), "the key is in a journal"
    expected = chain.expected(header["startSlot"], header["endSlot"],
                              transactions=header["transactions"],
                              account_diffs=header["accountDiffs"])
    body = records[1:]
    assert [r["slot"] for r in body if r["type"] == "Slot"] == expected.slots, path
    txs = [r for r in body if r["type"] == "Transaction"]
    diffs = [r for r in body if r["type"] == "AccountDiff"]
    signatures = [r["signature"] for r in txs]
    diff_keys = [(r["signature"], r["account"]) for r in diffs]
    assert len(signatures) == len(set(signatures)), f"{path}: a transaction line twice"
    assert len(diff_keys) == len(set(diff_keys)), f"{path}: a diff line twice"
    assert sorted(signatures) == sorted(expected.signatures), path
    assert sorted(diff_keys) == sorted(expected.diff_keys), path
    assert [r["slot"] for r in txs] == sorted(r["slot"] for r in txs), path
    assert [r["slot"] for r in diffs] == sorted(r["slot"] for r in diffs), path
    # Every control event once: their seqIds strictly increase across attempts.
    seqs = [r["seq"] for r in body if r["type"] in SEQUENCED]
    assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), f"{path}: a control " \
        f"line twice or out of order"
    completed = [r for r in body if r["type"] == "Completed"]
    assert len(completed) == 1, path
    assert completed[0]["summary"]["blocks_executed"] == len(expected.slots) - 1, path
    return header
