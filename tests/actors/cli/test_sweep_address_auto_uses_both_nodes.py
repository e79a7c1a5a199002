"""`sweep --address auto` on a two-node Ray cluster runs sessions on both nodes, exactly.

The cluster is two `ray start` nodes on this machine, on the loopback interface
only (:mod:`tests.support.ray_cluster`); the sweep is the command line, as a user
runs it (with a relative ``--out``: the nodes' workers run in another directory),
against a local simulator. Ending the cluster leaves no Ray process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.simulator import DEFAULT_API_KEY, LocalSimulator
from tests.support.harness import wait_for
from tests.support.sweep_checks import check_journal

pytest.importorskip("ray")

from tests.support.ray_cluster import LOOPBACK, LoopbackRayCluster  # noqa: E402

SESSIONS = 4
LOOPBACK_LISTEN = {LOOPBACK, f"::ffff:{LOOPBACK}"}  # a dual-stack socket bound to 127.0.0.1


@pytest.mark.timeout(240)
def test_sweep_with_address_auto_uses_both_nodes_of_a_two_node_cluster_exactly(
        tmp_path: Path) -> None:
    began = time.monotonic()
    out = tmp_path / "sweep"
    with LocalSimulator(seed=3) as sim, LoopbackRayCluster() as cluster:
        started = time.monotonic()
        nodes = cluster.raylets()
        assert len(nodes) == 2, nodes
        assert set(nodes.values()) == {LOOPBACK}, nodes  # neither node advertises another IP
        # `ray status` shows what the autoscaler's monitor last polled: both, in time.
        wait_for(lambda: all(f"node_{node}" in cluster.status() for node in nodes), 60,
                 f"ray status to show both nodes {sorted(nodes)}")
        settled = cluster.wait_schedulable()
        first, _ = sim.available_range()
        result = subprocess.run(
            [sys.executable, "-m", "actors.cli", "sweep", "--address", "auto",
             "--url", sim.url, "--api-key", DEFAULT_API_KEY, "--start-slot", str(first),
             "--sessions", str(SESSIONS), "--slot-count", "120", "--concurrency", "4",
             "--workers", "2", "--out", out.name,  # relative: the nodes run elsewhere
             *(f"--transactions={a}" for a in sim.addresses[:2]),
             *(f"--account-diffs={a}" for a in sim.addresses[2:4])],
            cwd=tmp_path, env=cluster.client_env, text=True, capture_output=True,
            timeout=150)
        swept = time.monotonic()
        listening = cluster.listening()
        left = cluster.stop()
        assert left == [] and cluster.processes() == [], left
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert "on Ray at auto" in result.stderr
    assert not listening - LOOPBACK_LISTEN, listening
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == SESSIONS and summary["failed"] == [], summary["failed"]
    assert summary["backend"] == "ray"
    assert summary["nodes"] == 2 and summary["node_ids"] == sorted(nodes), (
        summary["node_ids"], nodes)
    for entry in summary["per_session"]:
        check_journal(out / entry["journal"], sim.chain)
        assert entry["duplicates_delivered"] == 0
    expected = [sim.expected(p["start_slot"], p["end_slot"], transactions=sim.addresses[:2],
                             account_diffs=sim.addresses[2:4])
                for p in summary["per_session"]]
    assert summary["events"]["Slot"] == sum(len(e.slots) for e in expected)
    assert summary["events"]["Transaction"] == sum(len(e.signatures) for e in expected) > 0
    assert summary["events"]["AccountDiff"] == sum(len(e.diff_keys) for e in expected) > 0
    print(f"two-node sweep: cluster up {started - began:.1f}s, sweep {swept - started:.1f}s, "
          f"cluster ended {ended - swept:.1f}s; placeable after {settled:.1f}s; "
          f"nodes {sorted(nodes)}")
