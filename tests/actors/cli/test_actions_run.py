"""``run --actions FILE``: actions scheduled and their results journaled, in order, each
once; a bad file refused with exit 2 naming the action at fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import ScheduledAction
from protocol.simulator.chain import Chain
from tests.support import ROOT

CLI = [sys.executable, "-m", "actors.cli", "run"]
ENV = {k: v for k, v in os.environ.items() if k != "BACKTEST_API_KEY"}
TX = "AQID"


def test_action_results_are_journaled_in_order(tmp_path: Path) -> None:
    first, _ = Chain(0, 2000).available_range()
    actions = [{"slot": first + 40, "transactions": [TX], "label": "late"},
               {"slot": first + 5, "transactions": [TX, TX], "label": "early"},
               {"slot": first + 99, "transactions": [TX], "label": "last"}]
    (tmp_path / "actions.json").write_text(json.dumps(actions))
    journal = tmp_path / "j.jsonl"
    result = subprocess.run([*CLI, "--slot-count", "100", "--actions",
                             str(tmp_path / "actions.json"), "--out", str(journal), "--json"],
                            cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["actions"] == 3
    expected = Chain(0, 2000).expected(first, first + 99, actions=[
        ScheduledAction(a["slot"], a["transactions"], a["label"]) for a in actions]).actions
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    got = [(r["action_index"], r["slot"], r["label"]) for r in records
           if r["type"] == "ActionResult"]
    assert [(i, s) for i, s, _ in got] == expected
    assert [label for *_, label in got] == ["early", "late", "last"]
    assert records[0]["actions"] is True  # a resume subscribes to them again
    completed = next(i for i, r in enumerate(records) if r["type"] == "Completed")
    assert all(records.index(r) < completed for r in records if r["type"] == "ActionResult")


@pytest.mark.parametrize(("content", "message"), [
    ('{"slot": 1}', "expected a non-empty JSON list"),
    ('[{"transactions": ["AQID"]}]', "action 0: slot: required"),
    ('[{"slot": 400000010, "transactions": []}]', "action 0: transactions"),
    ('[{"slot": 400000010, "transactions": ["AQID"], "when": 3}]', "action 0: expected"),
    ('[{"slot": 1, "transactions": ["AQID"]}]', "outside the run's range"),
    ("not json", "cannot read it"),
])
def test_a_bad_actions_file_is_refused_before_anything_is_sent(
        tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "actions.json"
    path.write_text(content)
    result = subprocess.run([*CLI, "--slot-count", "100", "--actions", str(path)], cwd=ROOT,
                            env=ENV, text=True, capture_output=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
