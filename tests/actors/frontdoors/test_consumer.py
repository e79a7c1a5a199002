"""One consumer core under every front door: the asyncio facade and the handles use its
public methods, never another class's underscore members, and the options of a session
are checked in one place (SessionOptions) with the field at fault named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from actors.frontdoors.consumer import SessionOptions, check_timeout, initial_subscriptions
from protocol import Timing

FRONTDOORS = Path(__file__).resolve().parents[3] / "actors" / "frontdoors"


def reach_ins(path: Path) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls``, and ``from m import _name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not (
                node.attr.startswith("__") and node.attr.endswith("__")):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.extend(f"{path.name}:{node.lineno}: import {alias.name}"
                         for alias in node.names if alias.name.startswith("_"))
    return found


@pytest.mark.parametrize("name", ["aio.py", "handles.py"])
def test_a_front_door_uses_no_private_member_of_another(name: str) -> None:
    assert reach_ins(FRONTDOORS / name) == []


def test_the_check_finds_a_reach_in(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from .blocking import _check\n\ndef f(s):\n    return s._taken\n")
    assert reach_ins(sample) == ["sample.py:1: import _check", "sample.py:4: s._taken"]


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"policy": "fast"}, TypeError, "policy: expected ReconnectPolicy or None, got str"),
    ({"timing": 5}, TypeError, "timing: expected Timing or None, got int"),
    ({"listener": object()}, TypeError, "listener: expected a pykka.ActorRef or None"),
    ({"sslopt": {1: 2}}, TypeError, "sslopt: expected str keys"),
    ({"max_frame_size": 10}, ValueError, "max_frame_size: expected an integer >= 1024"),
    ({"max_queue": True}, ValueError, "max_queue: expected an integer >= 32, got True"),
    ({"max_run_ahead": 0}, ValueError, "max_run_ahead: expected an integer >= 1, got 0"),
    ({"on_lost_continue": "retry"}, ValueError, "on_lost_continue: expected 'resend' or"),
])
def test_each_bad_option_is_named_once_in_one_place(options: dict[str, object],
                                                    error: type[Exception],
                                                    message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        SessionOptions(**options)  # type: ignore[arg-type]


def test_good_options_pass_and_keep_their_values() -> None:
    timing = Timing(keepalive_interval=0.1)
    options = SessionOptions(timing=timing, max_queue=64, on_lost_continue="raise")
    assert (options.timing, options.max_queue, options.on_lost_continue) == (timing, 64,
                                                                            "raise")


def test_start_subscriptions_and_timeouts_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="transactions: expected a list of addresses"):
        initial_subscriptions("one-address", ())
    assert initial_subscriptions((), ()) == ()
    with pytest.raises(ValueError, match="timeout: expected a number of seconds >= 0"):
        check_timeout(float("nan"))
    assert check_timeout(10**30) is None and check_timeout(2) == 2.0
