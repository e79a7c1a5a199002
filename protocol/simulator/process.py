"""The simulator in a child process, for measurements that must be the client's alone.

In one process the server's CPU time and memory would count against the
client (same GIL, same RSS); benchmarks and the slow-consumer test use this.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import DEFAULT_API_KEY, ServerLiveness


@contextmanager
def simulator_process(*, seed: int = 0, slots: int = 2000, txs_per_slot: int = 4,
                      api_key: str = DEFAULT_API_KEY, startup_timeout: float = 30.0,
                      max_connections_per_client: int | None = None,
                      liveness: ServerLiveness | None = None) -> Iterator[str]:
    """Run ``python -m protocol.simulator --port 0``; yield its control URL.

    ``liveness``: how the server finds dead peers (its keepalive interval and
    deadline; the local defaults when None)."""
    limit = ([] if max_connections_per_client is None
             else ["--max-connections-per-client", str(max_connections_per_client)])
    if liveness is not None:
        limit += ["--keepalive-interval", str(liveness.keepalive_interval),
                  "--keepalive-deadline", str(liveness.keepalive_deadline)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "protocol.simulator", "--port", "0", "--seed", str(seed),
         "--slots", str(slots), "--txs-per-slot", str(txs_per_slot), "--api-key", api_key,
         *limit],
        stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    stderr = proc.stderr
    assert stderr is not None

    def read_log() -> None:
        # Read the log to the end: a full pipe would stall the server.
        for line in stderr:
            if not found and (match := re.search(r"serving (ws://\S+/backtest)", line)):
                found.append(match.group(1))
                started.set()
        started.set()

    started = threading.Event()
    reader = threading.Thread(target=read_log, name="simulator-log", daemon=True)
    reader.start()
    try:
        if not started.wait(startup_timeout) or not found:
            raise RuntimeError("the simulator process did not start")
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=5)
