"""RestartPermits: the session's side of a reconnect gate, as a plain class (no actors)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from actors.decisions.permits import RestartPermits
from actors.supervision.reminders import RestartChild
from protocol import ReconnectPolicy


class RecordingGate:
    """Grants nothing by itself: the test grants, and sees every call."""

    def __init__(self) -> None:
        self.requests: dict[Hashable, Callable[[], None]] = {}
        self.released: list[Hashable] = []

    def request(self, token: Hashable, grant: Callable[[], None]) -> None:
        self.requests[token] = grant

    def release(self, token: Hashable) -> None:
        self.released.append(token)


def permits() -> tuple[RestartPermits, RecordingGate, list[Any]]:
    gate = RecordingGate()
    told: list[Any] = []
    return RestartPermits(ReconnectPolicy(gate=gate), lambda: "s-1", told.append), gate, told


def test_the_ungated_attempts_spawn_at_once_then_a_permit_is_asked_for() -> None:
    p, gate, told = permits()
    assert all(p.may_spawn("control", g, g, None) for g in range(1, 6))
    assert not gate.requests
    assert not p.may_spawn("control", 6, 6, None)
    [(token, grant)] = gate.requests.items()
    assert str(token).startswith("s-1/control/6/")
    grant()
    assert told == [RestartChild("control", 6, permit=str(token))]
    assert p.may_spawn("control", 6, 6, str(token))  # the grant's restart spawns
    p.on_up("control", 7)  # the link it started is up: the permit goes back
    assert gate.released == [token]


def test_a_late_report_about_the_old_link_does_not_withdraw_the_request() -> None:
    p, gate, _ = permits()
    assert not p.may_spawn("transactions", 8, 6, None)
    p.link_ended("transactions", 8)  # a second report about generation 8, the lost link
    assert gate.released == []
    assert not p.may_spawn("transactions", 8, 7, None)  # a second timer: no second request
    assert len(gate.requests) == 1


def test_a_grant_that_comes_after_its_request_was_withdrawn_is_given_back() -> None:
    p, gate, _ = permits()
    assert not p.may_spawn("control", 6, 6, None)
    first = next(iter(gate.requests))
    p.release("control")  # e.g. the session failed meanwhile
    assert not p.may_spawn("control", 6, 6, str(first))
    assert gate.released == [first, first]  # withdrawn, then the late grant given back
    assert not p.may_spawn("control", 6, 6, None)
    second = [t for t in gate.requests if t != first]
    assert len(second) == 1  # tokens are never reused (a remote gate may reorder calls)


def test_close_releases_every_permit_and_request() -> None:
    p, gate, _ = permits()
    assert not p.may_spawn("control", 6, 6, None)
    assert not p.may_spawn("account_diffs", 9, 6, None)
    p.close()
    assert sorted(map(str, gate.released)) == sorted(map(str, gate.requests))
    assert not ReconnectPolicy().gated(100)
