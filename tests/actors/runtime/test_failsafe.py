"""FailSafeActor: a handler's bug becomes a report, and an actor whose failure handler
raises a BaseException still stops instead of staying registered."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from actors.runtime.failsafe import FailSafeActor
from tests.support.harness import no_leaks


class _FailSafe(FailSafeActor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("handler bug")
        return message

    def on_internal_error(self, exc: Exception) -> None:
        raise SystemExit("failing failed with a BaseException")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_failsafe_whose_on_internal_error_raises_base_exception_is_not_a_zombie() -> None:
    with no_leaks(3.0):
        ref = _FailSafe.start()
        ref.tell("boom")
        ask_f = ref.ask("after", block=False)
        with pytest.raises(pykka.ActorDeadError):
            ask_f.get(timeout=3)
        assert not ref.is_alive()
        assert ref not in pykka.ActorRegistry.get_all()
