"""Sans-I/O backtest wire protocol: typed messages and the one codec.

Nothing in this package (outside :mod:`protocol.simulator`) touches a socket or
a thread: it only turns text into typed events and back.
"""

from .codec import (
    decode_pubsub,
    decode_pubsub_request,
    decode_request,
    decode_response,
    encode_pubsub,
    encode_request,
    encode_response,
    encode_subscribe,
)
from .errors import ProtocolError
from .messages import (
    AccountData,
    Attach,
    BacktestError,
    Close,
    Completed,
    ContinueParams,
    CreateSession,
    EncodedBinary,
    Error,
    ReadyForContinue,
    Resume,
    SessionAttached,
    SessionCreated,
    SlotNotification,
    Status,
    Success,
    UnknownResponse,
)
from .policy import (
    CONNECT_TIMEOUT,
    GRACEFUL_CLOSE_TIMEOUT,
    HANDSHAKE_RESPONSE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_MISS_DEADLINE,
    RECONNECT_BACKOFF_MULTIPLIER,
    RECONNECT_INITIAL_BACKOFF,
    RECONNECT_JITTER,
    RECONNECT_MAX_ATTEMPTS,
    RECONNECT_MAX_BACKOFF,
    RECONNECT_MAX_TOTAL,
    RECONNECT_UPTIME_RESET,
    ReconnectPolicy,
    Timing,
)
from .pubsub import (
    AccountDiffNotification,
    JsonRpcError,
    Subscribe,
    SubscribeAck,
    TransactionNotification,
    UnknownPubsub,
    Unsubscribe,
    UnsubscribeAck,
)
from .urls import backtest_ws_url, pubsub_url, resolve_rpc_url

__all__ = [
    "CONNECT_TIMEOUT", "GRACEFUL_CLOSE_TIMEOUT", "HANDSHAKE_RESPONSE_TIMEOUT",
    "KEEPALIVE_INTERVAL", "KEEPALIVE_MISS_DEADLINE", "RECONNECT_BACKOFF_MULTIPLIER",
    "RECONNECT_INITIAL_BACKOFF", "RECONNECT_JITTER", "RECONNECT_MAX_ATTEMPTS",
    "RECONNECT_MAX_BACKOFF", "RECONNECT_MAX_TOTAL", "RECONNECT_UPTIME_RESET",
    "AccountData", "AccountDiffNotification", "Attach", "BacktestError", "Close", "Completed",
    "ContinueParams", "CreateSession", "EncodedBinary", "Error", "JsonRpcError",
    "ProtocolError", "ReadyForContinue", "ReconnectPolicy", "Resume", "SessionAttached",
    "SessionCreated", "SlotNotification", "Status", "Subscribe", "SubscribeAck", "Success",
    "Timing", "TransactionNotification", "UnknownPubsub", "UnknownResponse", "Unsubscribe",
    "UnsubscribeAck", "backtest_ws_url", "decode_pubsub", "decode_pubsub_request",
    "decode_request", "decode_response", "encode_pubsub", "encode_request", "encode_response",
    "encode_subscribe", "pubsub_url", "resolve_rpc_url",
]
