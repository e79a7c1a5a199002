"""A second process that watches a session someone else drives, through subscription handles.

``python -m tests.support.watch_driver RPC_ENDPOINT START TX_ADDRS DIFF_ADDRS N_TX N_DIFF OUT``
spawns a transaction and an account-diff subscription handle (replay from
START), prints ``ready`` once both are Up, then writes each item as a JSON line
to OUT until it has N_TX transactions and N_DIFF diffs (or hears nothing for
15 s), and shuts down. Each handle is read on its own thread, as an
application with two consumers would.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from actors import AccountDiff, ConnectionChanged, Transaction, Up
from actors.frontdoors.handles import (
    SubscriptionHandle,
    spawn_account_diff_subscription,
    spawn_transaction_subscription,
)
from protocol.codec import encode_record
from tests.support.harness import FAST, QUICK_RETRY


def main(argv: list[str]) -> None:
    endpoint, start, tx, diffs, n_tx, n_diff, out_path = argv
    options: dict[str, Any] = {"timing": FAST, "policy": QUICK_RETRY,
                               "replay_from_slot": int(start)}
    handles = [spawn_transaction_subscription(endpoint, tx.split(","), **options),
               spawn_account_diff_subscription(endpoint, diffs.split(","), **options)]
    lines: list[str] = []
    lock = threading.Lock()
    up = threading.Barrier(3, timeout=15)

    def consume(handle: SubscriptionHandle, wanted: int) -> None:
        got, announced = 0, False
        while got < wanted:
            event = handle.next_event(timeout=15)
            if isinstance(event, ConnectionChanged) and isinstance(event.status, Up) \
                    and not announced:
                announced = True
                up.wait()
            elif isinstance(event, Transaction | AccountDiff):
                got += 1
                with lock:
                    lines.append(encode_record(event))

    threads = [threading.Thread(target=consume, args=(h, int(n)))
               for h, n in zip(handles, (n_tx, n_diff), strict=True)]
    for thread in threads:
        thread.start()
    up.wait()
    print("ready", flush=True)
    for thread in threads:
        thread.join(40)
    stats = [h.stats()["reconnects"] for h in handles]
    for handle in handles:
        handle.shutdown()
    with open(out_path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"reconnects {stats}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
