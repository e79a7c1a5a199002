"""``summary.json``: what the sweep did, counted from the journals themselves.

Event counts come from each session's journal, not from in-memory counters:
a session resumed on another worker (or by ``--resume DIR``) spans several
attempts, and its journal is the one record that holds all of them once.
Counters only a live session knows (reconnects per connection, duplicates
dropped, lost continues, ...) are added up over the attempts the driver saw,
and kept in ``summary.json`` so a resumed sweep carries them on. The summary
is rewritten (atomically) after every session that ends, so a killed sweep
leaves a consistent one behind.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from protocol.codec import load_document

from ...logs import SessionLogger
from .job import STATS_KEYS

SUMMARY_FILE = "summary.json"
SET_ASIDE_SUFFIX = ".unreadable"  # what a summary that cannot be carried on is renamed to
_NOT_EVENTS = ("JournalHeader", "ContinueSent")


def journal_facts(path: str) -> dict[str, Any]:
    """Events per kind, duplicated lines, the server's summary: read from one journal."""
    kinds: Counter[str] = Counter()
    seen: set[Any] = set()
    duplicates = 0
    server: dict[str, Any] = {}
    session_id = ""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return {"events": {}, "duplicates_delivered": 0, "server": {}, "session_id": ""}
    for raw in lines:
        if not raw:
            continue
        try:
            record = load_document(raw)
        except ValueError:
            continue  # a torn last line: the next attempt cuts it off
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "JournalHeader":
            session_id = record.get("sessionId", "")
        if not isinstance(kind, str) or kind in _NOT_EVENTS:
            continue
        kinds[kind] += 1
        key: Any = None
        if kind == "Slot":
            key = ("slot", record.get("slot"))
        elif kind == "Transaction":
            key = ("tx", record.get("signature"))
        elif kind == "AccountDiff":
            key = ("diff", record.get("signature"), record.get("account"))
        elif kind == "Completed":
            server = dict(record.get("summary") or {})
        if key is not None:
            duplicates += key in seen
            seen.add(key)
    return {"events": dict(sorted(kinds.items())), "duplicates_delivered": duplicates,
            "server": server, "session_id": session_id}


def load_summary(out_dir: str) -> dict[str, Any]:
    """The summary a previous run of this sweep left, or ``{}``.

    A file that is not a summary (garbage, or JSON with the wrong shape: another
    program's, or edited by hand) is set aside as ``summary.json.unreadable``
    with a warning, and the resumed sweep counts from its journals alone: the
    counters only it held (reconnects, attempts) start again, nothing else is lost.
    """
    path = os.path.join(out_dir, SUMMARY_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable, or not UTF-8
        return _set_aside(path, f"cannot be read: {exc}")
    try:
        data = json.loads(text)
        check_summary(data)
    except ValueError as exc:
        return _set_aside(path, str(exc))
    result: dict[str, Any] = data
    return result


def check_summary(data: Any) -> None:
    """Raise ValueError naming the first field whose type a resumed sweep cannot use."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    _number(data, "wall_time", "wall_time")
    sessions = data.get("per_session", [])
    if not isinstance(sessions, list):
        raise ValueError(f"per_session: expected a list, got {type(sessions).__name__}")
    for i, entry in enumerate(sessions):
        where = f"per_session[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("index", "attempts", "resumes", *STATS_KEYS):
            if key in entry and type(entry[key]) is not int:
                raise ValueError(f"{where}.{key}: expected an integer, got {entry[key]!r}")
        _number(entry, "wall_time", f"{where}.wall_time")
        reconnects = entry.get("reconnects", {})
        if not isinstance(reconnects, dict) or any(
                type(v) is not int for v in reconnects.values()):
            raise ValueError(f"{where}.reconnects: expected an object of integers, got "
                             f"{reconnects!r}")
        reasons = entry.get("reasons", [])
        if not isinstance(reasons, list):
            raise ValueError(f"{where}.reasons: expected a list, got {reasons!r}")


def _number(data: dict[str, Any], key: str, where: str) -> None:
    value = data.get(key, 0)
    if type(value) not in (int, float):
        raise ValueError(f"{where}: expected a number, got {value!r}")


def _set_aside(path: str, problem: str) -> dict[str, Any]:
    aside = path + SET_ASIDE_SUFFIX
    try:
        os.replace(path, aside)
    except OSError as exc:
        aside = f"(not moved: {exc})"
    SessionLogger("sweep.summary", "(sweep)").warning(
        "%s is not a sweep summary (%s): set aside as %s; this run counts from the "
        "journals, and its per-connection counters start again", path, problem, aside)
    return {}


def write_summary(out_dir: str, summary: dict[str, Any]) -> None:
    path = os.path.join(out_dir, SUMMARY_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
