# The README's run loop injection example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
import base64
from actors import ManagedBacktestSession, ReadyForContinue
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

my_tx = base64.b64encode(bytes([1]) + bytes(64) + b"message").decode()  # your signed tx here
sent = []

def on_event(event):
    if isinstance(event, ReadyForContinue) and not sent:   # the first continue carries it
        sent.append(my_tx)
        return ContinueParams(advance_count=10, transactions=[my_tx])
    return None                                            # then run's default: 10 blocks

with LocalSimulator(seed=1) as sim:
    first, _ = sim.available_range()
    with ManagedBacktestSession.start(sim.url, "local-dev-key", CreateSession(first, first + 50),
                                      timing=sim.timing, policy=sim.policy) as session:
        session.subscribe_transactions(sim.addresses[:2])
        done = session.run(advance=10, on_event=on_event)
        recorded = sim.session_stats(session.session_info.session_id)
    print("completed:", done.summary)
    print("simulator recorded", recorded.user_transactions, "injected; the same bytes:",
          recorded.injected_transactions == (my_tx,))
