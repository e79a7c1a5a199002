# The README's application actor example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
import pykka
from actors import Completed, ManagedBacktestSession, ReadyForContinue, SessionListener
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

class Strategy(SessionListener):
    def __init__(self, done):
        super().__init__()
        self.done = done
    def on_event(self, event):                  # every event, from the first one, in order
        if isinstance(event, ReadyForContinue):
            self.send_continue(ContinueParams(advance_count=10))
        elif isinstance(event, Completed):
            self.done.set(event.summary)

with LocalSimulator(seed=1) as sim:
    first, _ = sim.available_range()
    done = pykka.ThreadingFuture()
    strategy = Strategy.start(done)
    session = ManagedBacktestSession.start(sim.url, "local-dev-key",
                                           CreateSession(first, first + 50), listener=strategy,
                                           transactions=sim.addresses[:2],  # with the create
                                           timing=sim.timing, policy=sim.policy)
    print(done.get(timeout=60))
    session.shutdown()
    strategy.stop()
