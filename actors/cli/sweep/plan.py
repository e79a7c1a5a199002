"""What a sweep runs: its sessions (ranges and addresses), read from flags or a TOML file.

Everything is checked here, before any connection is made, so a bad sweep
file costs one line and exit 2, never half a sweep. The plan is also written
into the output directory (``sweep.json``) so that ``--resume DIR`` runs the
same sessions again without the original flags (never the key).

Sweep file (TOML, read with :mod:`tomllib`)::

    concurrency = 4              # optional; --concurrency wins
    advance = 10                 # produced blocks per continue, default for every range
    transactions = ["<addr>"]    # default addresses per stream, for every range
    account_diffs = ["<addr>"]

    [[range]]
    start = 399834992            # optional: default right after the previous range
    count = 200                  # slots in the range
    repeat = 3                   # optional: that many consecutive ranges of `count`
    advance = 5                  # optional, overrides the default
    transactions = ["<addr>"]    # optional, overrides the default
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import attrs

from protocol.messages import pubkey_problem

PLAN_FILE = "sweep.json"
PLAN_FORMAT = "backtest-actors-sweep"
RANGE_KEYS = {"start", "count", "repeat", "advance", "transactions", "account_diffs"}
TOP_KEYS = {"concurrency", "advance", "transactions", "account_diffs", "range"}


class PlanError(ValueError):
    """A bad flag or sweep file: one line, exit 2, nothing sent."""


@attrs.frozen
class SessionSpec:
    """One session of the sweep: a range and what to subscribe to."""

    index: int
    start_slot: int
    end_slot: int
    transactions: tuple[str, ...]
    account_diffs: tuple[str, ...]
    advance: int

    @property
    def name(self) -> str:
        return f"session-{self.index:03d}"

    @property
    def slots(self) -> int:
        return self.end_slot - self.start_slot + 1

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "startSlot": self.start_slot, "endSlot": self.end_slot,
                "transactions": list(self.transactions),
                "accountDiffs": list(self.account_diffs), "advance": self.advance}

    @classmethod
    def from_dict(cls, data: Any) -> SessionSpec:
        try:
            return cls(int(data["index"]), int(data["startSlot"]), int(data["endSlot"]),
                       tuple(data["transactions"]), tuple(data["accountDiffs"]),
                       int(data["advance"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{PLAN_FILE}: bad session entry ({exc})") from None


@attrs.frozen
class SweepPlan:
    """The sessions and where they run; ``embedded``: the sweep's own local simulator."""

    url: str | None  # None: the embedded simulator
    sessions: tuple[SessionSpec, ...]
    seed: int = 0
    max_run_ahead: int = 80
    # How many sessions ran at once: ``--resume`` carries it on unless told otherwise.
    concurrency: int | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None

    def to_json(self) -> str:
        return json.dumps({"format": PLAN_FORMAT, "url": self.url, "seed": self.seed,
                           "maxRunAhead": self.max_run_ahead, "concurrency": self.concurrency,
                           "sessions": [s.as_dict() for s in self.sessions]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SweepPlan:
        try:
            data = json.loads(text)
        except ValueError:
            raise PlanError(f"{PLAN_FILE}: not JSON") from None
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError(f"{PLAN_FILE}: not a backtest-actors sweep plan")
        url = data.get("url")
        if url is not None and not isinstance(url, str):
            raise PlanError(f"{PLAN_FILE}: url: expected a string")
        sessions = data.get("sessions")
        if not isinstance(sessions, list) or not sessions:
            raise PlanError(f"{PLAN_FILE}: sessions: expected a non-empty list")
        concurrency = data.get("concurrency")
        if concurrency is not None and (type(concurrency) is not int or concurrency < 1):
            raise PlanError(f"{PLAN_FILE}: concurrency: expected an integer >= 1, got "
                            f"{concurrency!r}")
        return cls(url, tuple(SessionSpec.from_dict(s) for s in sessions),
                   int(data.get("seed", 0)), int(data.get("maxRunAhead", 80)), concurrency)


@attrs.frozen
class RangeRule:
    """One ``[[range]]`` entry (or the flags' single rule) before slots are resolved."""

    count: int
    start: int | None = None
    repeat: int = 1
    advance: int | None = None
    transactions: tuple[str, ...] | None = None
    account_diffs: tuple[str, ...] | None = None


@attrs.frozen
class SweepFile:
    rules: tuple[RangeRule, ...]
    concurrency: int | None = None
    advance: int = 1
    transactions: tuple[str, ...] = ()
    account_diffs: tuple[str, ...] = ()


def _int(where: str, value: Any, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise PlanError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _addresses(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise PlanError(f"{where}: expected a list of base58 addresses")
    for i, address in enumerate(value):
        problem = pubkey_problem(address)
        if problem is not None:
            raise PlanError(f"{where}[{i}]: {problem}")
    return tuple(value)


def read_sweep_file(path: str) -> SweepFile:
    """Parse and check a sweep file; :class:`PlanError` names the bad field."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise PlanError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not TOML ({exc})") from None
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {sorted(unknown)}")
    ranges = data.get("range")
    if not isinstance(ranges, list) or not ranges:
        raise PlanError(f"{path}: expected at least one [[range]]")
    rules = []
    for i, entry in enumerate(ranges):
        where = f"{path}: range[{i}]"
        unknown = set(entry) - RANGE_KEYS
        if unknown:
            raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}")
        if "count" not in entry:
            raise PlanError(f"{where}: count: missing")
        rules.append(RangeRule(
            _int(f"{where}.count", entry["count"], 1),
            None if "start" not in entry else _int(f"{where}.start", entry["start"], 0),
            _int(f"{where}.repeat", entry.get("repeat", 1), 1),
            None if "advance" not in entry else _int(f"{where}.advance", entry["advance"], 1),
            None if "transactions" not in entry else _addresses(
                f"{where}.transactions", entry["transactions"]),
            None if "account_diffs" not in entry else _addresses(
                f"{where}.account_diffs", entry["account_diffs"])))
    concurrency = data.get("concurrency")
    return SweepFile(
        tuple(rules), None if concurrency is None else _int(f"{path}: concurrency",
                                                             concurrency, 1),
        _int(f"{path}: advance", data.get("advance", 1), 1),
        _addresses(f"{path}: transactions", data.get("transactions", [])),
        _addresses(f"{path}: account_diffs", data.get("account_diffs", [])))


def resolve(sweep: SweepFile, first: int | None, last: int | None,
            default_addresses: tuple[tuple[str, ...], tuple[str, ...]] | None
            ) -> tuple[SessionSpec, ...]:
    """Slot ranges for every session; ``first``/``last``: the server's available range.

    A range without ``start`` follows the previous one (the first starts at
    ``first``). ``default_addresses`` (embedded simulator) fills streams that
    neither the rule nor the file name.
    """
    specs: list[SessionSpec] = []
    cursor = first
    for i, rule in enumerate(sweep.rules):
        start = rule.start if rule.start is not None else cursor
        if start is None:
            raise PlanError(f"range[{i}]: start: needed against a real server (or "
                            f"--start-slot)")
        txs = rule.transactions if rule.transactions is not None else sweep.transactions
        diffs = rule.account_diffs if rule.account_diffs is not None else sweep.account_diffs
        if not txs and not diffs and default_addresses is not None:
            txs, diffs = default_addresses
        for _ in range(rule.repeat):
            end = start + rule.count - 1
            if first is not None and start < first:
                raise PlanError(f"range[{i}]: start {start} is before the first slot {first}")
            if last is not None and end > last:
                raise PlanError(f"range[{i}]: slots up to {end}, but the server holds slots "
                                f"up to {last}")
            specs.append(SessionSpec(len(specs), start, end, tuple(txs), tuple(diffs),
                                     rule.advance or sweep.advance))
            start = end + 1
        cursor = start
    return tuple(specs)
