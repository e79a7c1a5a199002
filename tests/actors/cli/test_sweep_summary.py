"""``summary.json`` that a resumed sweep cannot carry on is set aside with a warning,
whether it is garbage or valid JSON with the wrong types, never a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from actors.cli.sweep.summary import SUMMARY_FILE, load_summary, write_summary

GOOD = {"wall_time": 1.5, "per_session": [
    {"index": 0, "attempts": 2, "resumes": 1, "wall_time": 0.7,
     "reconnects": {"control": 1}, "duplicates_dropped": 3, "reasons": []}]}


def test_a_good_summary_is_carried_on(tmp_path: Path) -> None:
    write_summary(str(tmp_path), GOOD)
    assert load_summary(str(tmp_path)) == GOOD
    assert load_summary(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(("content", "named"), [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({"wall_time": "yesterday"}), "wall_time: expected a number"),
    (json.dumps({"per_session": 5}), "per_session: expected a list, got int"),
    (json.dumps({"per_session": [{"index": 0, "attempts": "two"}]}),
     "per_session[0].attempts: expected an integer, got 'two'"),
    (json.dumps({"per_session": [{"index": 0, "reconnects": ["control"]}]}),
     "per_session[0].reconnects: expected an object of integers"),
    (json.dumps({"per_session": [{"index": 0, "gaps": None}]}),
     "per_session[0].gaps: expected an integer, got None"),
])
def test_a_summary_of_the_wrong_shape_is_set_aside_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, named: str) -> None:
    (tmp_path / SUMMARY_FILE).write_text(content)
    with caplog.at_level(logging.WARNING, logger="backtest_actors"):
        assert load_summary(str(tmp_path)) == {}
    assert not (tmp_path / SUMMARY_FILE).exists()
    assert (tmp_path / (SUMMARY_FILE + ".unreadable")).read_text() == content
    [record] = caplog.records
    assert named in record.getMessage() and "set aside" in record.getMessage()
