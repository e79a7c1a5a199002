"""RestartPermits: a session's side of the policy's ReconnectGate (reconnect storms).

A plain class beside the supervisor, like ``Children``: after the policy's
``ungated_attempts`` restarts of an outage, a link's restart asks the gate
for a permit, and the permit is held from the spawn of the new link until it
is Up or lost again. The supervisor only asks :meth:`RestartPermits.may_spawn`
before it spawns and tells :meth:`link_ended` / :meth:`on_up` / :meth:`close`.

Two rules keep a restart from waiting forever for a grant that never comes:
a permit belongs to the restart of one generation (a late report about the
link it replaces does not withdraw it, and a second timer for the same
restart does not ask again), and every request has a token of its own (a
remote gate may run a release before the request it follows).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from protocol import ReconnectPolicy

from ..supervision.reminders import RestartChild


class RestartPermits:
    def __init__(self, policy: ReconnectPolicy, session_id: Callable[[], str],
                 tell: Callable[[Any], bool | None]) -> None:
        self._policy = policy
        self._session_id = session_id
        # To the supervisor, from any thread: the grant's RestartChild. It returns
        # False once the supervisor is gone, and the permit then goes back at once.
        self._tell = tell
        self._held: dict[str, tuple[str, int]] = {}  # link -> (token, generation it restarts)
        self._prefix = uuid.uuid4().hex[:12]
        self._serial = 0
        self.requested = 0  # gated restarts (stats)

    def may_spawn(self, name: str, generation: int, attempt: int, permit: str | None
                  ) -> bool:
        """True when the restart of ``name`` (lost at ``generation``) may spawn now;
        otherwise a permit is asked for and its grant comes back as a ``RestartChild``.

        ``permit`` is the token a grant carried (None for a timer's restart).
        """
        gate = self._policy.gate
        if permit is not None:
            if self._held.get(name, ("", 0))[0] == permit:
                return True
            self.release_token(name, permit)  # granted after it was withdrawn
            return False
        if gate is None or not self._policy.gated(attempt):
            return True
        held = self._held.get(name)
        if held is not None and held[1] == generation:
            return False  # this restart already waits for a permit
        self.release(name)
        self._serial += 1
        token = f"{self._session_id()}/{name}/{generation}/{self._prefix}-{self._serial}"
        self._held[name] = (token, generation)
        self.requested += 1

        def grant() -> None:  # any thread: only a message to the supervisor
            if self._tell(RestartChild(name, generation, permit=token)) is False:
                gate.release(token)

        gate.request(token, grant)
        return False

    def on_up(self, name: str, generation: int) -> None:
        """The link of ``generation`` is Up (or ended): its permit goes back."""
        held = self._held.get(name)
        if held is not None and generation > held[1]:
            self.release(name)

    link_ended = on_up

    def release_token(self, name: str, token: str | None) -> None:
        if token is None:
            return
        if self._held.get(name, ("", 0))[0] == token:
            del self._held[name]
        if self._policy.gate is not None:
            self._policy.gate.release(token)

    def release(self, name: str) -> None:
        held = self._held.get(name)
        if held is not None:
            self.release_token(name, held[0])

    def close(self) -> None:
        for name in list(self._held):
            self.release(name)
