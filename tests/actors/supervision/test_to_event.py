"""A notification's event is built without the frozen class's ``__init__``: still that class."""

from __future__ import annotations

import attrs
import pytest

from actors import AccountDiff, Transaction
from actors.supervision.subscription import _Matcher, _to_event
from protocol import AccountDiffNotification, TransactionNotification

A, B = "Addr1", "Addr2"


@pytest.mark.timeout(10)
def test_events_are_the_plain_frozen_classes() -> None:
    tx = TransactionNotification(1, 5, "sig", {"message": {"accountKeys": [A, B]}}, None, 2)
    event = _to_event(tx, A, _Matcher((A, B)))
    made = Transaction(5, "sig", tx.transaction, None, 2, (A, B))
    assert type(event) is Transaction and event == made and repr(event) == repr(made)
    diff = AccountDiffNotification(1, 6, B, "sig2", {"lamports": 1}, None, 0)
    event = _to_event(diff, B, _Matcher((A, B)))
    made_diff = AccountDiff(6, B, "sig2", {"lamports": 1}, None, 0)
    assert type(event) is AccountDiff and event == made_diff and event.key == made_diff.key
    assert hash(_to_event(AccountDiffNotification(1, 6, B, "s", None, None, None), B,
                          _Matcher((B,)))) == hash(AccountDiff(6, B, "s"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.slot = 7  # type: ignore[misc]
