# The README's handles example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
from actors import ReadyForContinue, Transaction, spawn_control, spawn_transaction_subscription
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

with LocalSimulator(seed=1) as sim:
    first, _ = sim.available_range()
    wanted = sim.expected(first, first + 20, transactions=sim.addresses[:2], account_diffs=[])
    with spawn_control(sim.url, "local-dev-key", CreateSession(first, first + 20),
                       timing=sim.timing) as control:
        endpoint = control.session_info.rpc_endpoint       # hand this to another process
        with spawn_transaction_subscription(endpoint, sim.addresses[:2], timing=sim.timing,
                                            replay_from_slot=first) as watcher:
            for event in control:                           # ends after Completed
                if isinstance(event, ReadyForContinue):
                    control.send_continue(ContinueParams(advance_count=5))
            seen = []
            while len(seen) < len(wanted.signatures):       # no Completed on a watcher
                if isinstance(item := watcher.next_event(timeout=10), Transaction):
                    seen.append(item.signature)
            print("driven to", event, "; watched", len(seen), "transactions")
