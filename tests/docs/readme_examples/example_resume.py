# The README's resume example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
from actors import Completed, Cursor, ManagedBacktestSession, ReadyForContinue
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

with LocalSimulator(seed=1) as sim:
    first, _ = sim.available_range()
    session = ManagedBacktestSession.start(sim.url, "local-dev-key",
                                           CreateSession(first, first + 50), timing=sim.timing)
    session.subscribe_transactions(sim.addresses[:2])
    for _ in range(30):
        if isinstance(session.next_event(timeout=30), ReadyForContinue):
            session.send_continue(ContinueParams(advance_count=5))
    saved = session.cursor().to_json()   # persist it; a crash here loses nothing
    session.detach()                     # connections closed, the session stays on the server
    with ManagedBacktestSession.attach(sim.url, "local-dev-key", Cursor.from_json(saved),
                                       timing=sim.timing) as s:
        while not isinstance(event := s.next_event(timeout=30), Completed):
            if isinstance(event, ReadyForContinue):
                s.send_continue(ContinueParams(advance_count=5))
        print("resumed to", event)
