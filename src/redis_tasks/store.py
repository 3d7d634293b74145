"""The Redis data model of one backend instance: enqueue, claim, finish, renew and read.

Every state change is one Lua script (``lua/``); its call and reply are plain functions
(``calls.py``) that the sync and the asyncio sender (``sender.py``) run alike. Here they meet the
backend's settings, and a failure of Redis becomes the error a caller sees.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from . import calls, durability
from .calls import Claim, ClaimBatch, Enqueued, EnqueueRefused, EnqueueRequest
from .connection import Connections, Topology, redacted
from .exceptions import BackendUnavailable, QueueFull
from .keys import Keys
from .limits import queue_limits_argument
from .options import BackendOptions
from .sender import SyncClient, SyncSender, on_node_of
from .serialization import dumps

FINISHED = ("SUCCESSFUL", "FAILED")

__all__ = ["Claim", "ClaimBatch", "EnqueueRequest", "Enqueued", "TaskStore"]


class TaskStore:
    def __init__(self, alias: str, options: BackendOptions) -> None:
        self.alias = alias
        self.options = options
        self.keys = Keys(options.namespace)
        o = options
        topology = Topology(o.location, o.cluster, o.sentinels, o.sentinel_kwargs)
        self.connections = Connections(topology, options.connection_options, o.direct_lanes)
        self._waits = durability.wait_commands(options)
        self.settings = calls.Settings(
            alias=alias,
            maxsize=o.maxsize,
            ttl_ms=None if o.ttl is None else int(o.ttl * 1000),
            result_ttl=o.result_ttl,
            lease_ms=int(o.lease_timeout * 1000),
            max_attempts=o.max_attempts,
        )

    def unavailable(self, exc: redis.RedisError) -> BackendUnavailable:
        where = f"Redis for task backend {self.alias!r} at {redacted(self.options.location)}"
        if isinstance(exc, redis.BusyLoadingError):  # refused, so certainly not run
            return BackendUnavailable(
                f"{where} is loading its data after a restart. Nothing was changed; "
                "try again in a moment."
            )
        sent = isinstance(exc, redis.ConnectionError | redis.TimeoutError) and (
            "connecting" not in str(exc)
        )
        if sent:  # the command was sent but no reply came: the script ran wholly or not at all
            outcome = (
                "It may or may not have been applied (a script runs wholly or not at all; "
                "an enqueue may be sent again safely with the exception's retry())"
            )
        else:
            outcome = "Nothing was changed"
        return BackendUnavailable(
            f"{where} failed: {str(exc).rstrip('.')}. {outcome}; check that Redis is running "
            "and LOCATION is right.",
            maybe_applied=sent,
        )

    # --- enqueue ------------------------------------------------------------------------

    def _enqueued(
        self, reply: Any, acks: list[Any], requests: Sequence[EnqueueRequest]
    ) -> Enqueued:
        outcome = calls.enqueued(reply)
        if isinstance(outcome, EnqueueRefused):
            if outcome.waiting is not None:
                raise QueueFull(
                    f"Task backend {self.alias!r} is full: {outcome.waiting} tasks wait and its "
                    f"maxsize is {self.options.maxsize}; {len(requests)} more would pass it. "
                    "Nothing was queued; run more workers or raise 'maxsize'."
                )
            raise BackendUnavailable(
                f"Task id {outcome.taken_id!r} is taken by another task in backend "
                f"{self.alias!r}; nothing was queued. Give each call its own id."
            )
        if acks:  # waits were sent (wait_replicas, wait_aof): what did they confirm?
            durability.check(self.alias, self.options, acks, requests)
        return outcome

    def enqueue(self, requests: Sequence[EnqueueRequest]) -> Enqueued:
        """Queue tasks, all or none, in one script call."""
        call = calls.enqueue(self.keys, self.settings, requests)
        sender = self.connections.sender
        try:
            if self._waits:
                reply, acks = sender.run_then(call, self._waits)
            else:
                reply, acks = sender.run(call), []
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        return self._enqueued(reply, acks, requests)

    async def aenqueue(self, requests: Sequence[EnqueueRequest]) -> Enqueued:
        call = calls.enqueue(self.keys, self.settings, requests)
        try:
            reply, acks = await self.connections.asender.run_then(call, self._waits)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        return self._enqueued(reply, acks, requests)

    def tick(self, schedule: str, tick_ms: int, enqueue: bool, request: EnqueueRequest) -> str:
        """Enqueue one periodic tick, once however many workers call this for it (see
        ``calls.ticked`` for the answer)."""
        call = calls.tick(self.keys, self.settings, schedule, tick_ms, enqueue, request)
        return calls.ticked(self.connections.sender.run(call))

    def schedule_state(self, names: Sequence[str], field: str = "last") -> dict[str, int | None]:
        """Per schedule: the last tick (ms) handled (enqueued or skipped), or with
        ``field="last_enqueued_at"`` when a tick was last really enqueued."""
        pipe = self.connections.sync.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.keys.schedule(name), field)
        found = zip(names, pipe.execute(), strict=True)
        return {name: None if value is None else int(value) for name, value in found}

    # --- read ---------------------------------------------------------------------------

    def read(self, task_id: str) -> dict[bytes, bytes]:
        try:
            return self.connections.read(self.keys.task(task_id))
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc

    async def aread(self, task_id: str) -> dict[bytes, bytes]:
        try:
            fields = await self.connections.aio.hgetall(self.keys.task(task_id))
            return cast(dict[bytes, bytes], fields)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc

    def count_waiting(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """Ready (including due deferred) and deferred task counts over the given queues."""
        client = self.connections.sync
        members = cast(set[bytes], client.smembers(self.keys.queues)) if not queues else set()
        names = list(queues) if queues else sorted(q.decode() for q in members)
        pipe = client.pipeline(transaction=False)
        for q in names:
            pipe.zcard(self.keys.ready(q))
            pipe.zcard(self.keys.deferred(q))
        pipe.zcard(self.keys.running)
        counts = pipe.execute()
        return {
            "ready": sum(counts[0:-1:2]),
            "deferred": sum(counts[1:-1:2]),
            "running": counts[-1],
        }

    # --- worker side --------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        count: int,
        queues: Sequence[str] = (),
        *,
        thorough: bool = False,
        park_ms: int | None = None,
        parked: bool = False,
    ) -> ClaimBatch:
        """Claim up to ``count`` tasks. The sweeps (deadlines, lost leases) and the index check
        run at most every SWEEP_MS / RECONCILE_MS across workers; ``thorough`` runs both now
        (a burst worker's last look before it exits). With ``park_ms``, a claim that runs dry
        parks the worker for a hand-off at enqueue (``wait_for_work``); the next claim says
        ``parked`` and brings what was handed over meanwhile. Sent with the finishes on their
        way, in one trip (batching.py)."""
        call = calls.claim(
            self.keys, self.settings, worker_id, count, queues, thorough, self._queue_limits,
            park_ms, parked,
        )  # fmt: skip
        return calls.claimed(await self.connections.batcher.run(call))

    @functools.cached_property
    def _queue_limits(self) -> str:
        return queue_limits_argument(self.options.queue_limits)

    @functools.cached_property
    def _finish_head(self) -> tuple[Any, ...]:
        return calls.finish_head(self.keys, self.settings)

    def _finish_run(self, items: Sequence[Sequence[Any]]) -> Any:
        return calls.finish(self.keys, self._finish_head, items)

    async def afinish(
        self,
        claim: Claim,
        status: str,
        return_json: str | None = None,
        error_json: str | None = None,
    ) -> int:
        """Store the outcome; return finished_at in ms, or 0 if the lease was lost (refused).
        Finishes made together share one script run (batching.py)."""
        item = calls.finish_item(claim, status, return_json, error_json)
        return int(await self.connections.batcher.merged("finish", item, self._finish_run))

    def owns(self, claim: Claim) -> bool:
        """Whether the claim's lease is still held (asked before running a claim that waited
        long: its worker may have been paused past the lease)."""
        owner = self.connections.sync.hget(self.keys.task(claim.task_id), "owner")
        return owner == claim.token.encode()

    async def aowns(self, claim: Claim) -> bool:
        owner = await self.connections.aio.hget(self.keys.task(claim.task_id), "owner")
        return owner == claim.token.encode()

    async def adead_letter(self, task_id: str) -> None:
        """Move an id to the dead-letter set (``redis_tasks list dead``), where it stays a week."""
        now_s, now_us = await self.connections.aio.time()
        await self.connections.aio.zadd(self.keys.dead, {task_id: now_s * 1000 + now_us // 1000})

    async def next_cancel(self, worker_id: str, timeout: float) -> str | None:
        """The id of a task this worker runs that an operator cancelled, waiting at most
        ``timeout`` seconds for one."""
        found = await self.connections.aio.blpop([self.keys.cancel(worker_id)], timeout=timeout)
        if found is None:
            return None
        task_id = found[1]
        return task_id if isinstance(task_id, str) else task_id.decode()

    async def arequeue(
        self, claim: Claim, delay: float = 0, error_json: str | None = None, handback: bool = False
    ) -> int:
        """Put an owned task back: a retry after ``delay`` seconds, or a graceful hand-back.
        Returns when it is due again (ms), or 0 if the lease was lost (nothing changed)."""
        call = calls.requeue(self.keys, self.settings, claim, delay, error_json, handback)
        return int(await self.connections.asender.run(call))

    def renew(self, client: SyncClient, leases: dict[str, str]) -> list[str]:
        """Extend the leases still held (from the heartbeat's own client); return the ids whose
        lease was taken."""
        call = calls.renew(self.keys, self.settings, leases)
        return calls.renewed(SyncSender(client).run(call))

    def sample_depth(self, client: SyncClient) -> tuple[int, bool]:
        """Record this minute's depth for the charts (``series.py``) unless it is recorded
        already; (now_ms, whether this call recorded it)."""
        return calls.sampled(SyncSender(client).run(calls.sample(self.keys)))

    def register_worker(
        self, client: SyncClient, worker_id: str, info: dict[str, Any], ttl: float
    ) -> None:
        """Announce a live worker; it vanishes by itself ``ttl`` seconds after its last call."""
        seconds, micros = client.time()
        deadline = seconds * 1000 + micros // 1000 + int(ttl * 1000)
        pipe = client.pipeline(transaction=True)
        pipe.zadd(self.keys.workers, {worker_id: deadline})
        pipe.hset(self.keys.worker(worker_id), "info", dumps(info))
        pipe.pexpire(self.keys.worker(worker_id), int(ttl * 1000))
        pipe.execute()

    def unregister_worker(self, client: SyncClient, worker_id: str) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(self.keys.workers, worker_id)
        pipe.delete(self.keys.worker(worker_id))
        pipe.execute()

    def server_risks(self) -> list[str]:
        """What in the server's configuration can lose tasks (see docs/reliability.md)."""
        client = self.connections.sync
        risks = []
        try:
            config: dict[str, str] = {}
            for name in ("maxmemory-policy", "appendonly", "save"):
                found = client.config_get(name, **on_node_of(client, self.keys.prefix))
                config |= {str(k): str(v) for k, v in found.items()}
        except redis.ResponseError:  # CONFIG is often disabled on managed Redis
            return []
        policy = config.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            risks.append(
                f"maxmemory-policy is {policy!r}: Redis may evict queued tasks and results when "
                "memory runs out. Set it to 'noeviction'."
            )
        if config.get("appendonly") != "yes" and not config.get("save", "").strip():
            risks.append(
                "persistence is off (no AOF, no RDB snapshots): a Redis restart loses every "
                "queued task. Set 'appendonly yes' (appendfsync everysec)."
            )
        return risks

    async def wait_for_work(self, worker_id: str, timeout: float) -> Claim | None:
        """Block until an enqueue signals new work, or ``timeout`` seconds pass. A task handed
        to this (parked) worker at enqueue comes back, leased to it already."""
        inbox = self.keys.inbox(worker_id)
        keys = [inbox, self.keys.wake]
        found = await self.connections.aio.blpop(keys, timeout=max(timeout, 0.001))
        if found is None or found[0] not in (inbox, inbox.encode()) or not found[1]:
            return None  # a timeout, a wake token, or the worker's own rouse()
        return calls.handed(found[1])

    async def rouse(self, worker_id: str) -> None:
        """End the worker's ``wait_for_work`` early (a due time, a stop) by a blank entry in
        its inbox, rather than by cancelling the wait: a task handed to it just then would be
        taken off the inbox by Redis, and lost with the cancelled reply."""
        inbox = self.keys.inbox(worker_id)
        await self.connections.aio.lpush(inbox, "")
        await self.connections.aio.pexpire(inbox, self.settings.lease_ms)

    async def unpark(self, worker_id: str) -> list[Claim]:
        """A stopping worker leaves the parked list; returns what was handed to it meanwhile
        (still leased to it: the worker hands it back)."""
        reply = await self.connections.asender.run(calls.unpark(self.keys, worker_id))
        return calls.unparked(reply)

    # --- operators ----------------------------------------------------------------------

    def operate(self, task_id: str, mode: str) -> str | None:
        """Cancel or retry one task (``mode``); None when done, else why not."""
        reply = self.connections.sender.run(calls.operate(self.keys, self.settings, task_id, mode))
        return None if reply == 1 else reply.decode()

    def purge_batch(self, status: str, cutoff_ms: int, batch: int) -> tuple[int, int]:
        """(ids handled, results deleted) of one batch of finished results older than the
        cutoff; 0 handled: none is left."""
        handled, deleted = self.connections.sender.run(
            calls.purge(self.keys, status, cutoff_ms, batch)
        )
        return int(handled), int(deleted)
