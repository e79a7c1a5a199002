"""The Ray backend: workers are Ray actors that host sessions; one Ray actor is the gate.

Imported only when Ray is installed (``pip install 'backtest-actors[ray]'``), and
after :func:`~actors.cli.sweep.driver.make_backend` has set ``LOOPBACK_RAY_ENV`` for
an embedded Ray: every Ray process then listens on 127.0.0.1 only.
Ray does the distribution: with no address the sweep starts a fresh embedded
local Ray of its own (``address="local"``: never one that is already running on
the machine, another sweep's or a ``ray start``'s, so two sweeps never share
a cluster or its credentials), and ends the Ray processes a killed earlier
sweep left behind (:mod:`.ray_leftovers`); ``--address auto`` or ``ray://host:10001``
joins an existing cluster, whose nodes need this package installed and must
see the sweep's output directory (the journals are the sessions' state).

* **Workers** (:class:`~actors.cli.sweep.worker.SessionWorker` as a threaded Ray
  actor, ``num_cpus=0``: a session is I/O, not a CPU reservation) each host up
  to ``ceil(K / workers)`` sessions at once. When one dies (node loss,
  ``ray.kill``), every ``run`` call on it fails with ``RayActorError``; the
  driver records the loss and a fresh worker takes its place, and the lost
  sessions resume from their journals on whichever worker has room.
* **The reconnect gate** (:class:`RayReconnectGate`, an asyncio Ray actor)
  holds the sweep-wide permits; :class:`RayGateClient` is its
  :class:`~protocol.ReconnectGate` face inside a worker. A dead worker's
  permits are given back by the driver (``release_owner``) and, failing that,
  by the lease.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Hashable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ...runtime.reconnect_gate import DEFAULT_LEASE, LocalReconnectGate
from . import ray_leftovers
from .job import SessionJob, SessionOutcome
from .worker import SessionWorker

PROGRESS_TIMEOUT = 1.0  # seconds a progress poll may take before the display skips it


@ray.remote(num_cpus=0)
class RayReconnectGate:
    """The sweep's permits, in one place every worker reaches (asyncio actor)."""

    def __init__(self, limit: int, lease: float) -> None:
        self.gate = LocalReconnectGate(limit, lease=lease)
        self.owners: dict[Hashable, str] = {}
        self.waiters: dict[Hashable, asyncio.Future[bool]] = {}

    async def acquire(self, token: str, owner: str) -> bool:
        """Resolves True when granted, False when withdrawn first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self.waiters[token] = future
        self.owners[token] = owner

        def grant() -> None:  # from the loop or the lease thread
            loop.call_soon_threadsafe(_settle, future, True)

        self.gate.request(token, grant)
        try:
            return await future
        finally:
            self.waiters.pop(token, None)

    async def release(self, token: str) -> None:
        self.owners.pop(token, None)
        waiter = self.waiters.get(token)
        if waiter is not None:
            _settle(waiter, False)
        self.gate.release(token)

    async def release_owner(self, owner: str) -> int:
        tokens = [t for t, o in self.owners.items() if o == owner]
        for token in tokens:
            await self.release(str(token))
        return len(tokens)

    async def stats(self) -> dict[str, int]:
        return self.gate.stats()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class RayGateClient:
    """The :class:`~protocol.ReconnectGate` a worker's sessions use: calls the gate actor."""

    def __init__(self, actor: Any, owner: str) -> None:
        self._actor, self._owner = actor, owner

    def request(self, token: Hashable, grant: Callable[[], None]) -> None:
        future = self._actor.acquire.remote(str(token), self._owner).future()

        def done(f: Any) -> None:
            if f.exception() is None and f.result():
                grant()

        future.add_done_callback(done)

    def release(self, token: Hashable) -> None:
        self._actor.release.remote(str(token))


@ray.remote(num_cpus=0)
class RayWorker(SessionWorker):
    """A :class:`SessionWorker` in its own Ray worker process."""

    def __init__(self, worker_id: int, gate_actor: Any) -> None:
        super().__init__(worker_id, RayGateClient(gate_actor, f"worker-{worker_id}"))

    def node(self) -> str:
        """The Ray node this worker runs on (the summary counts the nodes a sweep used)."""
        node_id: str = ray.get_runtime_context().get_node_id()
        return node_id


class RayBackend:
    """Runs sessions on Ray workers; tells the driver about lost workers."""

    name = "ray"

    def __init__(self, concurrency: int, *, address: str | None = None,
                 workers: int | None = None, lease: float = DEFAULT_LEASE) -> None:
        self.owns_ray = not ray.is_initialized()
        self._record: str | None = None
        if self.owns_ray:
            if address is None:
                ray_leftovers.end_leftovers()
            ray.init(address=address or "local", include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        self.worker_count = max(1, min(concurrency, workers or cpus))
        self.capacity = math.ceil(concurrency / self.worker_count)
        self.gate = RayReconnectGate.remote(concurrency, lease)  # type: ignore[attr-defined]
        self.workers: dict[int, Any] = {}
        self.placed: dict[int, str | None] = {}  # worker id -> the node it was sent to
        self.lost_on: set[str] = set()  # nodes where a worker was lost
        self.load: dict[int, set[int]] = {}  # worker id -> session indexes running there
        self.lost_workers = 0
        self.nodes: set[str] = set()  # filled at close: the nodes its workers ran on
        self._node_refs: list[Any] = []
        self.last_worker: dict[int, int] = {}  # session index -> the worker it ran on last
        self._next_id = 0
        self._refs: dict[Any, tuple[int, int]] = {}  # ref -> (session index, worker id)
        for _ in range(self.worker_count):
            self._add_worker()
        if self.owns_ray and address is None:
            self._record = ray_leftovers.record_embedded_ray()

    def _add_worker(self) -> None:
        worker_id = self._next_id
        self._next_id += 1
        node = self._next_node()
        # On a cluster the workers go to the nodes in turn. With num_cpus=0 the default
        # packs them all on the first node that has room (the head), and so did SPREAD
        # (two workers on a two-node cluster, both on one node, in 3 runs of 3); a soft
        # affinity put a third of the actors elsewhere. A hard one holds; if its node is
        # gone, the worker is lost like any other and its successor avoids that node.
        strategy: Any = ("SPREAD" if node is None
                         else NodeAffinitySchedulingStrategy(node, soft=False))
        worker = RayWorker.options(  # type: ignore[attr-defined]
            max_concurrency=self.capacity + 4, max_restarts=0,
            scheduling_strategy=strategy).remote(worker_id, self.gate)
        self.workers[worker_id] = worker
        self.placed[worker_id] = node
        self._node_refs.append(worker.node.remote())
        self.load[worker_id] = set()

    def _next_node(self) -> str | None:
        """The alive node with the fewest of this sweep's workers; nodes without CPUs
        (a head started with ``--num-cpus=0`` to keep work off it) only when no node
        has any, and nodes that lost a worker only when no other is left (Ray may
        call a node alive for a while after it is gone). None when Ray cannot say."""
        try:
            alive = [n for n in ray.nodes() if n.get("Alive")]
        except RayError:
            return None
        working = [n for n in alive if n.get("Resources", {}).get("CPU", 0) > 0] or alive
        working = [n for n in working if n["NodeID"] not in self.lost_on] or working
        if not working:
            return None
        here = [self.placed[w] for w in self.workers]
        chosen: str = min((here.count(n["NodeID"]), n["NodeID"]) for n in working)[1]
        return chosen

    def submit(self, job: SessionJob) -> None:
        """On the least loaded worker; a session that failed goes to another one."""
        index = job.spec.index
        last = self.last_worker.get(index)
        worker_id = min(self.workers, key=lambda w: (w == last, len(self.load[w]), w))
        ref = self.workers[worker_id].run.remote(job)
        self._refs[ref] = (index, worker_id)
        self.load[worker_id].add(index)
        self.last_worker[index] = worker_id

    def wait(self, timeout: float) -> list[SessionOutcome]:
        if not self._refs:
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        outcomes = []
        for ref in ready:
            index, worker_id = self._refs.pop(ref)
            if worker_id in self.load:
                self.load[worker_id].discard(index)
            try:
                outcomes.append(ray.get(ref, timeout=PROGRESS_TIMEOUT))
            except RayActorError as exc:
                self._lost(worker_id)
                outcomes.append(SessionOutcome(index, "retryable",
                                               f"worker {worker_id} lost: "
                                               f"{type(exc).__name__}"))
            except RayError as exc:
                outcomes.append(SessionOutcome(index, "retryable", f"worker error: {exc!r}"))
        return outcomes

    def _lost(self, worker_id: int) -> None:
        if worker_id not in self.workers:
            return  # its other sessions already reported it
        del self.workers[worker_id]  # its other sessions' refs fail too, one by one
        node = self.placed.pop(worker_id, None)
        if node is not None:
            self.lost_on.add(node)
        self.load.pop(worker_id, None)
        self.lost_workers += 1
        self.gate.release_owner.remote(f"worker-{worker_id}")
        self._add_worker()

    def progress(self) -> list[dict[str, Any]]:
        refs = [w.progress.remote() for w in self.workers.values()]
        snapshots: list[dict[str, Any]] = []
        for ref in refs:
            try:
                snapshots.extend(ray.get(ref, timeout=PROGRESS_TIMEOUT))
            except (GetTimeoutError, RayError):
                continue  # a worker busy or gone: its line comes back next time
        return snapshots

    def gate_stats(self) -> dict[str, int]:
        try:
            stats: dict[str, int] = ray.get(self.gate.stats.remote(), timeout=PROGRESS_TIMEOUT)
            return stats
        except (GetTimeoutError, RayError):
            return {}

    def close(self) -> None:
        for ref in self._node_refs:
            try:
                self.nodes.add(ray.get(ref, timeout=PROGRESS_TIMEOUT))
            except (GetTimeoutError, RayError):
                continue  # a worker lost before it answered: its node is not counted
        for worker in self.workers.values():
            ray.kill(worker)
        ray.kill(self.gate)
        self.workers.clear()
        if self.owns_ray:
            ray.shutdown()
            if self._record is not None:
                ray_leftovers.forget(self._record)
