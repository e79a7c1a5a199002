"""Sans-I/O backtest wire protocol: typed messages and the one codec.

The top of this package is sans-I/O: it turns bytes and text into typed events
and back, and touches no socket and no thread. Its one I/O sub-package is
:mod:`protocol.simulator`, the local backtest server (an asyncio server, its
fault injection and a TCP fault proxy), which a session never imports (the
command line's embedded run and the test kit start it). The wire decisions are
in ``protocol/WIRE.md``. ``help(name)``
documents each class and function; the constants are the defaults of
:class:`Timing` and :class:`ReconnectPolicy`, named as in the reference crate:

* ``CONNECT_TIMEOUT`` (30 s): the whole TCP + TLS + WebSocket upgrade.
* ``HANDSHAKE_RESPONSE_TIMEOUT`` (180 s): each create / attach / subscribe answer
  (a cold start may park an upgrade for over 100 s).
* ``KEEPALIVE_INTERVAL`` (15 s): a WebSocket ping this often.
* ``KEEPALIVE_MISS_DEADLINE`` (45 s): no inbound frame this long = dead.
* ``GRACEFUL_CLOSE_TIMEOUT`` (10 s): close request and close frame; bounds shutdown.
* ``RECONNECT_INITIAL_BACKOFF`` (0.5 s), ``RECONNECT_BACKOFF_MULTIPLIER`` (2.0),
  ``RECONNECT_MAX_BACKOFF`` (30 s), ``RECONNECT_JITTER`` (0.2, i.e. +-20 %): the
  delay before restart n, ``min(initial * multiplier**(n-1), max) * (1 +- jitter)``.
* ``RECONNECT_MAX_ATTEMPTS`` (10) and ``RECONNECT_MAX_TOTAL`` (300 s): the budget
  of one outage; ``RECONNECT_UPTIME_RESET`` (60 s): Up this long resets it.
* ``RECONNECT_UNGATED_ATTEMPTS`` (5): restarts of one outage made without asking
  the policy's ``ReconnectGate`` (a sweep's bound on reconnects at once).
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
    AttachParallel,
    BacktestError,
    Close,
    CloseSession,
    Completed,
    ContinueParams,
    ContinueSession,
    ContinueToParams,
    CreateSession,
    DiscoveryBatch,
    DiscoveryFilter,
    EncodedBinary,
    Error,
    ParallelAttached,
    Paused,
    ReadyForContinue,
    Resume,
    ScheduledAction,
    SessionAttached,
    SessionCreated,
    SessionEvent,
    SessionsCreated,
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
    RECONNECT_UNGATED_ATTEMPTS,
    RECONNECT_UPTIME_RESET,
    ReconnectGate,
    ReconnectPolicy,
    Timing,
)
from .pubsub import (
    AccountDiffNotification,
    ActionResultNotification,
    ActionSubscribe,
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
    "RECONNECT_MAX_BACKOFF", "RECONNECT_MAX_TOTAL", "RECONNECT_UNGATED_ATTEMPTS",
    "RECONNECT_UPTIME_RESET",
    "AccountData", "AccountDiffNotification", "Attach", "BacktestError", "Close", "Completed",
    "ContinueParams", "ContinueToParams", "CreateSession", "DiscoveryBatch", "DiscoveryFilter",
    "EncodedBinary", "Error", "JsonRpcError", "Paused", "AttachParallel", "CloseSession",
    "ContinueSession", "ParallelAttached", "SessionEvent", "SessionsCreated",
    "ScheduledAction", "ActionSubscribe", "ActionResultNotification",
    "ProtocolError", "ReadyForContinue", "ReconnectGate", "ReconnectPolicy", "Resume",
    "SessionAttached",
    "SessionCreated", "SlotNotification", "Status", "Subscribe", "SubscribeAck", "Success",
    "Timing", "TransactionNotification", "UnknownPubsub", "UnknownResponse", "Unsubscribe",
    "UnsubscribeAck", "backtest_ws_url", "decode_pubsub", "decode_pubsub_request",
    "decode_request", "decode_response", "encode_pubsub", "encode_request", "encode_response",
    "encode_subscribe", "pubsub_url", "resolve_rpc_url",
]
