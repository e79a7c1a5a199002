"""FailSafeActor: a bug in a message handler becomes a report, not a silent stop.

pykka stops an actor whose ``on_receive`` raises for a ``tell`` (an ``ask``
hands the exception to its asker instead) and whose ``on_start`` raises,
and whatever the actor held is lost with it: queued events, waiting callers.
An actor built on this class stays alive and gets :meth:`on_internal_error`
with the exception, so it can fail its session with a typed error *after*
handing out what it holds.
"""

from __future__ import annotations

from typing import Any

from .inbox import SimpleInboxActor


class FailSafeActor(SimpleInboxActor):
    use_daemon_thread = True
    _recovered = False

    def on_internal_error(self, exc: Exception) -> None:
        """A handler raised ``exc``; must not raise (if it does, pykka's stop applies)."""
        raise NotImplementedError

    def on_crash(self, exc: BaseException | None) -> None:
        """``on_internal_error`` itself raised and pykka stopped the actor: last words."""

    def _handle_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # pykka's hook for a told message or on_start that raised (private, stable
        # since pykka 1.x, exercised by tests/actors/runtime/test_failsafe.py).
        if self.actor_stopped.is_set() or not isinstance(exc_value, Exception):
            super()._handle_failure(exc_type, exc_value, traceback)
            return
        self._recovered = True  # pykka calls on_failure next (for a tell)
        try:
            self.on_internal_error(exc_value)
        except BaseException:  # noqa: BLE001 - failing must not fail; stop as pykka would
            # Even a SystemExit: left to escape here, it would end the thread from
            # inside pykka's handler for Exception, with the actor still registered
            # and alive to every ask and stop, which would then wait for ever.
            self._recovered = False
            super()._handle_failure(exc_type, exc_value, traceback)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if self._recovered:
            self._recovered = False
            return
        self.on_crash(exception_value)
