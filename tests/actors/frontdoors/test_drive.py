"""The one ready -> continue loop (Drive) against the local simulator: its default, the
continue ``on_event`` asks for, and the hooks the command line and the sweep build on."""

from __future__ import annotations

import base64

from actors import Completed, ManagedBacktestSession, ReadyForContinue, Slot
from actors.events import ManagedEvent
from actors.frontdoors.drive import Drive
from actors.testing import assert_exact
from protocol import ContinueParams, CreateSession
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator

TX = base64.b64encode(bytes([1]) + bytes(64) + b"drive").decode()


def start(sim: LocalSimulator, slots: int) -> tuple[ManagedBacktestSession, object]:
    first, _ = sim.available_range()
    address = sim.addresses[0]
    session = ManagedBacktestSession.start(
        sim.url, DEFAULT_API_KEY, CreateSession(start_slot=first, end_slot=first + slots),
        timing=sim.timing, policy=sim.policy, transactions=[address])
    return session, sim.expected(first, first + slots, transactions=[address])


def test_the_loop_sends_the_default_or_what_on_event_asks_for_and_ends_at_completed(
        ) -> None:
    with LocalSimulator(seed=5) as sim:
        session, expected = start(sim, 30)
        events: list[ManagedEvent] = []
        readies = 0

        def on_event(event: ManagedEvent) -> ContinueParams | None:
            nonlocal readies
            events.append(event)
            if isinstance(event, ReadyForContinue):
                readies += 1
                if readies == 1:
                    return ContinueParams(advance_count=4, transactions=[TX])
            return None

        with session:
            completed = Drive(session, 3, on_event=on_event, timeout=30).run()
            stats = sim.session_stats(session.session_info.session_id)
        assert isinstance(completed, Completed) and events[-1] is completed
        assert_exact(events, expected)
        blocks = len(expected.slots) - 1  # type: ignore[attr-defined]
        # One continue of 4 blocks, then continues of 3 until the range is done.
        assert stats.continues_received == 1 + -(-(blocks - 4) // 3)
        assert stats.user_transactions == 1


class Recording(Drive):
    def __init__(self, session: ManagedBacktestSession, stop_after: int) -> None:
        super().__init__(session, 2, timeout=30)
        self.calls: list[str] = []
        self.stop_after = stop_after
        self.slots = 0

    def event(self, event: ManagedEvent) -> ContinueParams | None:
        if isinstance(event, Slot):
            self.slots += 1
        if isinstance(event, ReadyForContinue):
            self.calls.append("ready")
        return None

    def before_continue(self, params: ContinueParams) -> None:
        self.calls.append(f"before {params.advance_count}")

    def send_continue(self, params: ContinueParams) -> None:
        self.calls.append("send")
        super().send_continue(params)

    def stopped(self) -> bool:
        return self.slots >= self.stop_after


def test_each_continue_is_written_ahead_and_a_stopped_loop_returns_none() -> None:
    with LocalSimulator(seed=5) as sim:
        session, _ = start(sim, 40)
        with session:
            drive = Recording(session, stop_after=5)
            assert drive.run() is None
        # The anchor and four executed blocks: two continues of 2, then it stopped.
        assert drive.slots == 5
        assert drive.calls == ["ready", "before 2", "send"] * 2
