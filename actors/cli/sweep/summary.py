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

SUMMARY_FILE = "summary.json"
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
    try:
        with open(os.path.join(out_dir, SUMMARY_FILE), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
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
