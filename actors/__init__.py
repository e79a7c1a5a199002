"""The running system: supervised connection actors behind a managed session.

Plain code uses :class:`ManagedBacktestSession` (``next_event``, ``for event in
session``, ``run``); application actors subclass :class:`SessionListener` (or
any pykka actor), pass ``listener=their_ref`` and drive the supervisor with
the messages below (:class:`SendContinue`, :class:`SubscribeStream`,
:class:`UnsubscribeStream`, :class:`GetStatus`, :class:`GetStats`,
:class:`GetCursor`). ``help(name)`` documents each name.

Two names are type aliases, not classes:

* ``ManagedEvent``: any event a session delivers, the union of
  ``ReadyForContinue``, ``Slot``, ``Status``, ``Transaction``, ``AccountDiff``,
  ``Completed``, ``Error``, ``ConnectionChanged``, ``Gap``, ``ContinueLost``,
  ``Paused`` and ``DiscoveryBatch``.
* ``ConnectionStatus``: a connection's state in ``ConnectionChanged`` and
  ``status()``, the union of ``Connecting``, ``Up``, ``Reconnecting``,
  ``Failed`` and ``Closed``.
"""

import logging

from protocol import ContinueToParams, DiscoveryFilter

from .decisions.cursor import Cursor, CursorError
from .decisions.stepping import DiscoveryStep
from .events import (
    AccountDiff,
    ActionResult,
    Closed,
    Completed,
    Connecting,
    ConnectionChanged,
    ConnectionStatus,
    ContinueLost,
    DiscoveryBatch,
    Error,
    Failed,
    Gap,
    InvalidArgument,
    ManagedEvent,
    ManagedSessionError,
    Paused,
    ReadyForContinue,
    Reconnecting,
    SessionFailed,
    SessionInfo,
    Slot,
    Status,
    Transaction,
    Up,
)
from .frontdoors.aio import AsyncBacktestSession
from .frontdoors.aio_parallel import AsyncParallelSession, AsyncParallelSubSession
from .frontdoors.blocking import ManagedBacktestSession
from .frontdoors.handles import (
    ControlHandle,
    SubscriptionHandle,
    spawn_account_diff_subscription,
    spawn_control,
    spawn_transaction_subscription,
)
from .frontdoors.listener import SessionListener
from .frontdoors.parallel import ManagedParallelSession, ParallelSubSession
from .requests import (
    ContinueRefused,
    GetCursor,
    GetStats,
    GetStatus,
    ListenerAttached,
    SendContinue,
    SubscribeStream,
    UnsubscribeStream,
)
from .stats import SessionStats
from .supervision.supervisor import SessionSupervisor

# A library logs; the application decides where records go (and at what level).
logging.getLogger("backtest_actors").addHandler(logging.NullHandler())

__all__ = [
    "AccountDiff", "ActionResult", "AsyncBacktestSession", "AsyncParallelSession",
    "AsyncParallelSubSession",
    "Closed", "Completed", "Connecting",
    "ConnectionChanged", "ConnectionStatus", "ContinueLost", "ContinueRefused",
    "ContinueToParams", "ControlHandle", "Cursor", "CursorError", "DiscoveryBatch",
    "DiscoveryFilter", "DiscoveryStep", "Error", "Failed", "Gap", "GetCursor",
    "GetStats", "GetStatus", "InvalidArgument", "ListenerAttached", "ManagedBacktestSession",
    "ManagedParallelSession", "ParallelSubSession",
    "ManagedEvent", "ManagedSessionError", "Paused", "ReadyForContinue", "Reconnecting",
    "SendContinue", "SessionFailed",
    "SessionInfo", "SessionListener", "SessionStats", "SessionSupervisor", "Slot", "Status",
    "SubscribeStream", "SubscriptionHandle", "Transaction", "UnsubscribeStream", "Up",
    "spawn_account_diff_subscription", "spawn_control", "spawn_transaction_subscription",
]
