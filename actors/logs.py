"""Loggers that put the session id on every record.

Each actor gets its own logger (``backtest_actors.<actor>``); the adapter adds
``session_id`` as a record attribute (for structured handlers) and as a prefix
(for plain ones). Before the server has named the session, the id is
``"(creating)"``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

PENDING_SESSION = "(creating)"


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, name: str, session_id: str = PENDING_SESSION) -> None:
        super().__init__(logging.getLogger(f"backtest_actors.{name}"), {})
        self.session_id = session_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["session_id"] = self.session_id
        kwargs["extra"] = extra
        return f"[{self.session_id}] {msg}", kwargs
