"""Children as a plain class: which link generation is live, and what the reconnect
policy says after a loss (restart after a delay, give up, or stay closed)."""

from __future__ import annotations

from typing import Any

from actors.decisions.children import Children, GiveUp, Restart, StayClosed
from actors.events import Connecting, Up
from protocol import ReconnectPolicy

POLICY = ReconnectPolicy(initial=0.5, multiplier=2.0, max_delay=30.0, jitter=0.0,
                         max_attempts=3, max_total=100.0, uptime_reset=60.0)


def children(*names: str) -> tuple[Children, list[tuple[Any, Any]]]:
    sent: list[tuple[Any, Any]] = []

    def send(ref: Any, message: Any) -> bool:
        if ref == "gone":
            return False
        sent.append((ref, message))
        return True

    kids = Children(POLICY, send)
    for name in names:
        kids.add(name)
    return kids, sent


def lost(kids: Children, name: str, now: float, **facts: bool) -> Restart | GiveUp | StayClosed:
    flags = {"terminal": False, "created": True, "create_written": True, "completed": False}
    return kids.lost(name, "reset", now, **{**flags, **facts})


def test_restarts_follow_the_policy_then_the_budget_is_spent() -> None:
    kids, _ = children("control")
    assert lost(kids, "control", 0.0) == Restart(1, 0.5)
    assert lost(kids, "control", 1.0) == Restart(2, 1.0)
    assert lost(kids, "control", 2.0) == Restart(3, 2.0)
    verdict = lost(kids, "control", 3.0)
    assert isinstance(verdict, GiveUp) and verdict.kind == "control_failed"
    assert "reconnect budget spent after 3 restarts in 3.0s" in verdict.reason
    assert kids.stats()["reconnects"] == {"control": 3}


def test_a_link_up_for_the_uptime_reset_starts_a_fresh_budget() -> None:
    kids, _ = children("transactions")
    assert lost(kids, "transactions", 0.0) == Restart(1, 0.5)
    kids["transactions"].generation = 2
    kids.set_status("transactions", Up())
    kids.stayed_up("transactions", 1)  # a stale generation's report: nothing changes
    assert lost(kids, "transactions", 1.0) == Restart(2, 1.0)
    kids.set_status("transactions", Up())
    kids.stayed_up("transactions", 2)
    assert lost(kids, "transactions", 100.0) == Restart(1, 0.5)


def test_terminal_losses_give_up_with_the_kind_of_the_link() -> None:
    kids, _ = children("control", "account_diffs")
    assert lost(kids, "account_diffs", 0.0, terminal=True) == GiveUp("subscription_failed",
                                                                     "reset")
    assert lost(kids, "control", 0.0, created=False, create_written=True) == GiveUp(
        "create", "reset")  # a create is never written twice
    assert lost(kids, "control", 0.0, created=False, create_written=False) == Restart(1, 0.5)
    assert lost(kids, "control", 0.0, completed=True) == StayClosed()


def test_tell_reaches_only_a_live_link_and_says_when_it_is_gone() -> None:
    kids, sent = children("control", "transactions")
    assert not kids.tell("control", "ping")  # not started yet
    kids["control"].ref = "ref-1"
    kids["transactions"].ref = "gone"
    assert kids.tell("control", "ping") and not kids.tell("transactions", "ping")
    assert not kids.tell("account_diffs", "ping")
    assert sent == [("ref-1", "ping")]
    assert kids.alive() == ["ref-1", "gone"]


def test_a_link_added_again_continues_its_generations() -> None:
    kids, _ = children("transactions")
    kids["transactions"].generation = 4
    kids.remove("transactions")
    assert not kids.current("transactions", 4)  # a late report from the removed link
    again = kids.add("transactions")
    assert again.generation == 4 and isinstance(again.status, Connecting)
    assert kids.current("transactions", 4)


def test_status_changes_are_reported_once_and_all_up_needs_every_link() -> None:
    kids, _ = children("control", "transactions")
    assert kids.set_status("control", Up()) and not kids.set_status("control", Up())
    assert not kids.all_up()
    kids.set_status("transactions", Up())
    assert kids.all_up()
