"""The public names: each still imports from the package it always came from.

The lists are the packages' ``__all__`` as users first wrote code against them.
A name may be added to a package; none may leave it or move to another one, so a
program that imports ``from actors import X`` keeps running whatever the layout
under ``actors/`` becomes.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest

PUBLIC = {
    "actors": [
        "AccountDiff", "AsyncBacktestSession", "Closed", "Completed", "Connecting",
        "ConnectionChanged", "ConnectionStatus", "ContinueLost", "ContinueRefused",
        "ControlHandle", "Cursor", "CursorError", "Error", "Failed", "Gap", "GetCursor",
        "GetStats", "GetStatus", "ListenerAttached", "ManagedBacktestSession", "ManagedEvent",
        "ManagedSessionError", "ReadyForContinue", "Reconnecting", "SendContinue",
        "SessionFailed", "SessionInfo", "SessionListener", "SessionStats", "SessionSupervisor",
        "Slot", "Status", "SubscribeStream", "SubscriptionHandle", "Transaction",
        "UnsubscribeStream", "Up", "spawn_account_diff_subscription", "spawn_control",
        "spawn_transaction_subscription",
    ],
    "protocol": [
        "CONNECT_TIMEOUT", "GRACEFUL_CLOSE_TIMEOUT", "HANDSHAKE_RESPONSE_TIMEOUT",
        "KEEPALIVE_INTERVAL", "KEEPALIVE_MISS_DEADLINE", "RECONNECT_BACKOFF_MULTIPLIER",
        "RECONNECT_INITIAL_BACKOFF", "RECONNECT_JITTER", "RECONNECT_MAX_ATTEMPTS",
        "RECONNECT_MAX_BACKOFF", "RECONNECT_MAX_TOTAL", "RECONNECT_UNGATED_ATTEMPTS",
        "RECONNECT_UPTIME_RESET", "AccountData", "AccountDiffNotification", "Attach",
        "BacktestError", "Close", "Completed", "ContinueParams", "CreateSession",
        "EncodedBinary", "Error", "JsonRpcError", "ProtocolError", "ReadyForContinue",
        "ReconnectGate", "ReconnectPolicy", "Resume", "SessionAttached", "SessionCreated",
        "SlotNotification", "Status", "Subscribe", "SubscribeAck", "Success", "Timing",
        "TransactionNotification", "UnknownPubsub", "UnknownResponse", "Unsubscribe",
        "UnsubscribeAck", "backtest_ws_url", "decode_pubsub", "decode_pubsub_request",
        "decode_request", "decode_response", "encode_pubsub", "encode_request",
        "encode_response", "encode_subscribe", "pubsub_url", "resolve_rpc_url",
    ],
    "protocol.simulator": [
        "DEFAULT_API_KEY", "REAL_SERVER_LIVENESS", "STATS_HISTORY", "Chain", "Expected",
        "Faults", "LocalSimulator", "ServerLimits", "ServerLiveness", "SessionStats",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_public_name_is_exported_where_it_always_was(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert [name for name in PUBLIC[package] if name not in exported] == []
    assert [name for name in PUBLIC[package] if not hasattr(module, name)] == []


def test_the_command_line_entry_points_still_resolve() -> None:
    """``backtest-actors = actors.cli:main`` and ``python -m actors.cli``."""
    cli = importlib.import_module("actors.cli")
    assert callable(cli.main) and callable(cli.build_parser)
    assert importlib.util.find_spec("actors.cli.__main__") is not None
