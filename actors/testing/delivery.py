"""What a run delivered, compared with what the simulator says it must deliver.

:meth:`LocalSimulator.expected` answers, for a range and the subscribed
addresses, the slots (the anchor, then every produced block), the transaction
signatures and the account-diff keys a complete session delivers, each once and
in order. :func:`delivery_of` reads the same three lists off the events a run
received, so the two compare directly; :func:`assert_exact` says *what* differs
(missing, duplicated, unexpected, out of order), not only that something does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import attrs

from ..events import AccountDiff, Slot, Transaction

SHOWN = 5  # items named per kind of difference; the count says how many there are


@attrs.frozen
class Delivery:
    """The three lists :meth:`LocalSimulator.expected` returns, read off a run's events."""

    slots: list[int]
    signatures: list[str]
    diff_keys: list[tuple[str, str]]


class DeliveryMismatch(AssertionError):
    """A run did not deliver exactly what was expected; ``differences`` lists each way."""

    def __init__(self, differences: list[str]) -> None:
        self.differences = differences
        super().__init__("delivery is not exact:\n  " + "\n  ".join(differences))


def delivery_of(events: Iterable[Any]) -> Delivery:
    """Slots, signatures and diff keys in the order the events brought them."""
    slots: list[int] = []
    signatures: list[str] = []
    diff_keys: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, Slot):
            slots.append(event.slot)
        elif isinstance(event, Transaction):
            signatures.append(event.signature)
        elif isinstance(event, AccountDiff):
            diff_keys.append(event.key)
    return Delivery(slots, signatures, diff_keys)


def differences(got: Delivery, expected: Any) -> list[str]:
    """Every way ``got`` differs from ``expected`` (anything with ``slots``,
    ``signatures`` and ``diff_keys``); empty when the delivery is exact."""
    found: list[str] = []
    for name in ("slots", "signatures", "diff_keys"):
        found.extend(_compare(name, list(getattr(got, name)), list(getattr(expected, name))))
    return found


def assert_exact(events: Iterable[Any], expected: Any) -> Delivery:
    """Raise :class:`DeliveryMismatch` unless ``events`` delivered exactly ``expected``
    (each item once, in order); returns what was delivered."""
    got = delivery_of(events)
    found = differences(got, expected)
    if found:
        raise DeliveryMismatch(found)
    return got


def _compare(name: str, got: Sequence[Hashable], expected: Sequence[Hashable]) -> list[str]:
    if got == expected:
        return []
    counts, wanted = Counter(got), Counter(expected)
    found: list[str] = []
    missing = [item for item in expected if item not in counts]
    if missing:
        found.append(f"{name}: {len(missing)} missing: {_shown(missing)}")
    duplicated = [item for item, n in counts.items() if n > 1 and n > wanted.get(item, 0)]
    if duplicated:
        found.append(f"{name}: {len(duplicated)} delivered more than once: "
                     f"{_shown(duplicated)}")
    unexpected = [item for item in counts if item not in wanted]
    if unexpected:
        found.append(f"{name}: {len(unexpected)} not expected: {_shown(unexpected)}")
    if not found:
        first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        found.append(f"{name}: out of order from position {first}: got {got[first]!r}, "
                     f"expected {expected[first]!r}")
    return found


def _shown(items: Sequence[Hashable]) -> str:
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(repr(item) for item in items[:SHOWN]) + more
