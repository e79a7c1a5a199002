from __future__ import annotations

import random

import pytest

from protocol import ReconnectPolicy, Timing, backtest_ws_url, pubsub_url, resolve_rpc_url


def test_exponential_schedule_and_cap_without_jitter() -> None:
    policy = ReconnectPolicy(initial=0.5, multiplier=2.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(10_000) == 5.0  # no overflow far out


def test_jitter_bounds() -> None:
    policy = ReconnectPolicy(initial=1.0, multiplier=2.0, max_delay=8.0, jitter=0.2,
                             rng=random.Random(1))
    for attempt in range(1, 8):
        base = policy.base_delay(attempt)
        samples = [policy.delay(attempt) for _ in range(200)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples)
        assert max(samples) - min(samples) > base * 0.2  # it does vary


def test_seeded_rng_is_deterministic() -> None:
    a = ReconnectPolicy(rng=random.Random(42))
    b = ReconnectPolicy(rng=random.Random(42))
    assert [a.delay(n) for n in range(1, 11)] == [b.delay(n) for n in range(1, 11)]


def test_budget_exhaustion() -> None:
    policy = ReconnectPolicy(max_attempts=3, max_total=10.0)
    assert not policy.exhausted(1, 0.0)
    assert not policy.exhausted(3, 9.9)
    assert policy.exhausted(4, 0.0)
    assert policy.exhausted(2, 10.0)


@pytest.mark.parametrize("kwargs,field", [
    ({"jitter": 1.0}, "jitter"), ({"max_attempts": 0}, "max_attempts"),
    ({"multiplier": 0}, "multiplier"), ({"initial": -1}, "initial"),
])
def test_policy_rejects_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ReconnectPolicy(**kwargs)  # type: ignore[arg-type]


def test_timing_defaults_and_validation() -> None:
    assert Timing() == Timing(30, 180, 15, 45, 10)
    with pytest.raises(ValueError, match="^keepalive_deadline"):
        Timing(keepalive_interval=1, keepalive_deadline=1)
    with pytest.raises(ValueError, match="^connect"):
        Timing(connect=0)


@pytest.mark.parametrize("given,expected", [
    ("simulator.example.com", "wss://simulator.example.com/backtest"),
    ("ws://localhost:8900", "ws://localhost:8900/backtest"),
    ("ws://localhost:8900/backtest", "ws://localhost:8900/backtest"),
    ("wss://h/backtest/", "wss://h/backtest"),
])
def test_backtest_ws_url(given: str, expected: str) -> None:
    assert backtest_ws_url(given) == expected


def test_backtest_ws_url_rejects_http() -> None:
    with pytest.raises(ValueError, match="^url"):
        backtest_ws_url("http://h")


def test_rpc_and_pubsub_urls() -> None:
    assert resolve_rpc_url("ws://127.0.0.1:5/backtest", "/backtest/b1") == (
        "http://127.0.0.1:5/backtest/b1")
    assert resolve_rpc_url("wss://h/backtest", "/backtest/b1") == "https://h/backtest/b1"
    assert resolve_rpc_url("wss://h/backtest", "https://rpc/x") == "https://rpc/x"
    assert pubsub_url("https://h/backtest/b1") == "wss://h/backtest/b1"
    assert pubsub_url("http://h:1/backtest/b1") == "ws://h:1/backtest/b1"
