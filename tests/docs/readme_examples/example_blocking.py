# The README's blocking example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
from actors import ManagedBacktestSession, ReadyForContinue, Transaction
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

with LocalSimulator(seed=1) as sim:
    first, _ = sim.available_range()
    create = CreateSession(first, first + 50)
    with ManagedBacktestSession.start(sim.url, "local-dev-key", create,
                                      timing=sim.timing, policy=sim.policy) as session:
        session.subscribe_transactions(sim.addresses[:2])   # before the first continue
        for event in session:                                # Completed is the last one
            if isinstance(event, ReadyForContinue):
                session.send_continue(ContinueParams(advance_count=5))   # 5 blocks
            elif isinstance(event, Transaction):
                print(event.slot, event.signature[:12], event.matched)
