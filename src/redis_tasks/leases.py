"""The leases a worker holds, and the heartbeat thread that renews them.

A claimed task is leased to its worker for ``lease_timeout`` seconds; the heartbeat renews every
lease held a third of that apart, from a thread with its own Redis connections, so neither a
busy event loop nor CPU-bound sync tasks can starve it. The same beat keeps the worker's entry
in the registry fresh (``redis_tasks status``) and, once a minute, offers a sample of the queue
depth to the dashboard's charts (``series.py``). A lease found taken is logged: another attempt
owns the task now, and this worker's outcome will be refused by the finish script.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .calls import Claim

logger = logging.getLogger("redis_tasks")


class Leases:
    """Per backend: task id -> lease token, for the tasks this worker holds (thread-safe)."""

    def __init__(self, aliases: Iterable[str]) -> None:
        self._held: dict[str, dict[str, str]] = {alias: {} for alias in aliases}
        self._lock = threading.Lock()

    def hold(self, alias: str, claims: Iterable[Claim]) -> None:
        with self._lock:
            self._held[alias].update((c.task_id, c.token) for c in claims)

    def drop(self, alias: str, task_id: str) -> None:
        with self._lock:
            self._held[alias].pop(task_id, None)

    def of(self, alias: str) -> dict[str, str]:
        with self._lock:
            return dict(self._held[alias])

    def still_held(self, alias: str, leases: dict[str, str], task_ids: Iterable[str]) -> list[str]:
        """Those of ``task_ids`` still held under the token they had in ``leases`` (a task that
        finished meanwhile was not lost)."""
        with self._lock:
            held = self._held[alias]
            return [t for t in task_ids if held.get(t) == leases[t]]


class Heartbeat:
    """Renews the leases of ``leases`` and the worker's registry entry until stopped."""

    def __init__(
        self,
        worker_id: str,
        backends: Sequence[RedisBackend],
        leases: Leases,
        info: Callable[[RedisBackend, list[str]], dict[str, Any]],
    ) -> None:
        self.worker_id = worker_id
        self.backends = backends
        self.leases = leases
        self.info = info
        self.interval = min(b.config.lease_timeout for b in backends) / 3
        # Per backend: when (time.monotonic()) its next minute begins, the next depth sample.
        self._next_sample: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-tasks-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and leave the registry (a last beat may still be under way)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        clients = {b.alias: b.store.connections.new_sync() for b in self.backends}
        try:
            while True:
                for backend in self.backends:
                    self._beat(backend, clients[backend.alias])
                if self._stop.wait(self.interval):
                    break
            for backend in self.backends:
                with contextlib.suppress(redis.RedisError):
                    backend.store.unregister_worker(clients[backend.alias], self.worker_id)
        finally:
            for client in clients.values():
                client.close()

    def _beat(self, backend: RedisBackend, client: Any) -> None:
        leases = self.leases.of(backend.alias)
        try:  # leases first: they are what keeps tasks from running twice
            lost = backend.store.renew(client, leases) if leases else []
        except Exception as exc:
            logger.warning("Worker %s: lease renewal failed: %s", self.worker_id, exc)
            lost = []
        try:
            info = self.info(backend, list(leases))
            backend.store.register_worker(client, self.worker_id, info, ttl=3 * self.interval)
        except Exception as exc:
            logger.warning("Worker %s: registry update failed: %s", self.worker_id, exc)
        for task_id in self.leases.still_held(backend.alias, leases, lost):
            logger.warning(
                "Worker %s lost the lease of task %s; its outcome will be discarded",
                self.worker_id, task_id,
            )  # fmt: skip
        if time.monotonic() >= self._next_sample.get(backend.alias, 0.0):
            self._sample(backend, client)

    def _sample(self, backend: RedisBackend, client: Any) -> None:
        """The minute's depth sample (taken by the first worker to ask in the minute); then
        nothing until the next minute on the Redis clock."""
        try:
            now_ms, _ = backend.store.sample_depth(client)
        except Exception as exc:
            logger.warning("Worker %s: depth sample failed: %s", self.worker_id, exc)
            return
        self._next_sample[backend.alias] = time.monotonic() + (60_000 - now_ms % 60_000) / 1000
