"""A two-node Ray cluster on this machine, on the loopback interface only, for tests.

Each node is a ``ray start --block`` process with its own temp dir and ports;
ending that process (SIGTERM, by its pid) ends its node's processes. Never
``ray stop``: it ends every Ray process of the user on the machine, other
sweeps' and other test workers' included.

Loopback only takes one switch and one patch. On Linux, Ray turns 127.0.0.1
into the host's routable address (``ray start --node-ip-address`` and
``--address`` both go through ``services.resolve_ip_for_localhost``, which
asks ``get_node_ip_address``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``;
with that switch at "0", ``ray start --address=...`` refuses to add a node
("Multi-node Ray clusters are not supported on Windows and OSX"). Both read
the same ``ray_constants.ENABLE_RAY_CLUSTER``, so every process gets the switch
at "0" and the second node's ``ray start`` runs with the refusal turned off in
the CLI module only (:data:`GUARD_OFF`): its IP resolution still says 127.0.0.1.

The cluster has its own token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``),
never ``~/.ray/auth_token``, and every process of it carries
:data:`MARKER` in its environment, so the test can tell that none is left
(reparented ones included) without touching any other Ray on the machine.

``python -m tests.support.ray_cluster`` starts one, prints what a sweep needs
in its environment, and ends it on Ctrl-C (SWEEPS.md).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MARKER = "BACKTEST_TEST_RAY_CLUSTER"  # in the environment of every process of a cluster
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90.0  # seconds for one node's `ray start` to report "Ray runtime started"
STOP_TIMEOUT = 30.0  # seconds for a node's processes to end after SIGTERM
RAY = str(Path(sys.executable).with_name("ray"))
# `ray start` with its "no multi-node clusters" refusal off, and nothing else changed.
GUARD_OFF = ("import sys, types; import ray.scripts.scripts as cli; "
             "cli.ray_constants = types.SimpleNamespace("
             "**{**vars(cli.ray_constants), 'ENABLE_RAY_CLUSTER': True}); "
             "sys.argv[0] = 'ray'; sys.exit(cli.main())")

# A driver that places one actor on each alive node (hard affinity) and asks where it
# runs, until every one runs where it was sent; exits 1 at its deadline.
PROBE = """
import sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

ray.init(address="auto", log_to_driver=False, include_dashboard=False)
deadline = time.monotonic() + float(sys.argv[1])
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
while True:
    actors = [Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
              .remote() for n in nodes]
    placed = ray.get([a.node.remote() for a in actors], timeout=30)
    for actor in actors:
        ray.kill(actor)
    if placed == nodes:
        break
    if time.monotonic() > deadline:
        sys.exit(f"actors sent to {nodes} ran on {placed}")
    time.sleep(0.5)  # polling the scheduler's view, with a deadline
ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class LoopbackRayCluster:
    """A head node and one worker node, both at 127.0.0.1; a context manager."""

    def __init__(self, cpus_per_node: int = 1) -> None:
        self.cpus = cpus_per_node
        self.token = secrets.token_hex(32)
        self.marker = secrets.token_hex(8)
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.dirs: list[str] = []
        self.nodes: list[subprocess.Popen[bytes]] = []
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("RAY_") and k not in ("BACKTEST_API_KEY", MARKER)}
        base.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                     "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"})
        self.node_env = {**base, MARKER: self.marker}
        # A driver's environment: `--address auto` finds the cluster by RAY_ADDRESS.
        self.client_env = {**base, "RAY_ADDRESS": self.address}

    def __enter__(self) -> LoopbackRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._start_node([RAY, "start", "--head", f"--port={self.port}",
                          "--include-dashboard=false", f"--dashboard-port={free_port()}"])
        self._start_node([sys.executable, "-c", GUARD_OFF, "start",
                          f"--address={self.address}"])

    def _start_node(self, command: list[str]) -> None:
        # A short temp dir: Ray's unix sockets live under it (a path of at most 107 bytes).
        temp_dir = tempfile.mkdtemp(prefix="bt-ray-")
        self.dirs.append(temp_dir)
        out = Path(temp_dir) / "ray-start.out"
        with open(out, "wb") as sink:
            node = subprocess.Popen(
                [*command, f"--node-ip-address={LOOPBACK}", f"--temp-dir={temp_dir}",
                 f"--num-cpus={self.cpus}", f"--dashboard-agent-listen-port={free_port()}",
                 "--disable-usage-stats", "--block"],
                env=self.node_env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C at the terminal is for the test, not Ray
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT
        while b"Ray runtime started" not in out.read_bytes():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not start a node (exit {node.poll()}):\n"
                                   f"{out.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)  # polling a file for a condition, with a deadline

    def wait_schedulable(self, timeout: float = 60.0) -> float:
        """Wait until an actor sent to each node (hard node affinity) runs there; the
        seconds it took. Then a sweep that runs on one node points at the sweep, not
        at a node the scheduler could not use yet."""
        began = time.monotonic()
        result = subprocess.run([sys.executable, "-c", PROBE, str(timeout)],
                                env=self.client_env, capture_output=True, text=True,
                                timeout=timeout + 30)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        return time.monotonic() - began

    def processes(self) -> list[psutil.Process]:
        """Every running process of this cluster (by its marker), wherever it was reparented."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER) == self.marker and \
                        process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except psutil.Error:
                continue  # ended meanwhile, or not ours to read
        return found

    def raylets(self) -> dict[str, str]:
        """node id -> node IP address, as each node's raylet was told them."""
        nodes = {}
        for process in self.processes():
            try:
                if process.name() != "raylet":
                    continue
                args = " ".join(process.cmdline())
            except psutil.Error:
                continue
            node_id = re.search(r"--node_id=(\w+)", args)
            ip = re.search(r"--node_ip_address=(\S+)", args)
            if node_id and ip:
                nodes[node_id.group(1)] = ip.group(1)
        return nodes

    def listening(self) -> set[str]:
        """The local addresses every process of this cluster listens on (TCP)."""
        addresses = set()
        for process in self.processes():
            try:
                for conn in process.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        addresses.add(conn.laddr.ip)
            except psutil.Error:
                continue
        return addresses

    def status(self) -> str:
        """`ray status` of this cluster."""
        result = subprocess.run([RAY, "status", f"--address={self.address}"],
                                env=self.client_env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def stop(self) -> list[psutil.Process]:
        """SIGTERM each node (by pid), then SIGKILL what of the cluster is left; what
        outlived both (empty when all is well)."""
        for node in reversed(self.nodes):  # the worker node first, then the head
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
            try:
                node.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(STOP_TIMEOUT)
        _, alive = psutil.wait_procs(self.processes(), timeout=STOP_TIMEOUT)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
        for temp_dir in self.dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return alive


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # Ctrl-C, or SIGTERM, ends the cluster (SIGINT too when a shell started this in the
    # background with SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with LoopbackRayCluster() as cluster:
        print(f"two Ray nodes at {cluster.address}: {sorted(cluster.raylets())}")
        print("in the sweep's shell:")
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                     "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
            print(f"export {name}={cluster.client_env[name]}")
        print("Ctrl-C (or SIGTERM) ends the cluster", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    print("cluster ended")


if __name__ == "__main__":
    main()
