"""The Redis data model of one backend instance: enqueue, claim, finish, renew and read.

Every state change is one Lua script (see ``scripts.py``); the sync and asyncio twins of an
operation build the same arguments and call the same script.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import redis
import redis.asyncio

from . import durability, scripts
from .batching import ScriptBatcher
from .connection import Connections, SyncClient, Topology, on_node_of, redacted
from .direct import CommandHead, DirectLane
from .exceptions import BackendUnavailable, QueueFull
from .keys import Keys
from .options import BackendOptions
from .serialization import dumps as serialization_dumps

FINISHED = ("SUCCESSFUL", "FAILED")
CLAIM_FIELDS = tuple(name.encode() for name in scripts.CLAIM_FIELDS)
# How often, at most, claims sweep for passed dispatch deadlines and lost leases, and check the
# queue index against the set of queues (milliseconds, across all workers of an instance).
SWEEP_MS = 100
RECONCILE_MS = 2000


class EnqueueRequest(NamedTuple):
    """One task call, already validated and serialised (a tuple: a bulk enqueue makes one per
    call, and a frozen dataclass's ``__init__`` costs several times as much)."""

    task_id: str
    queue: str
    priority: int
    path: str
    args_json: str
    kwargs_json: str
    run_after_us: int | None  # exact, as the caller gave it; due at its millisecond
    unique_key: str | None = None
    max_attempts: int | None = None  # the task's own; None: the backend's


class Enqueued(NamedTuple):  # one per enqueue call: a tuple costs less than a dataclass
    now_ms: int
    existing: list[str | None]  # per request: the id of an identical unique task already queued


@dataclass(frozen=True)
class Claim:
    """A task this worker now owns: the lease token and the stored hash."""

    task_id: str
    token: str
    fields: dict[bytes, bytes]


@dataclass(frozen=True)
class ClaimBatch:
    now_ms: int
    next_due_ms: int | None
    claims: list[Claim]
    quarantined: list[str]  # keys of a wrong type that the claim renamed aside


_shas: dict[str, str] = {}


def _sha_of(source: str) -> str:
    """The SHA1 that EVALSHA names a script by, worked out once per source."""
    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()
    return sha


class TaskStore:
    def __init__(self, alias: str, options: BackendOptions) -> None:
        self.alias = alias
        self.options = options
        self.keys = Keys(options.namespace)
        o = options
        topology = Topology(o.location, o.cluster, o.sentinels, o.sentinel_kwargs)
        self.connections = Connections(topology, options.connection_options)
        self._waits = durability.wait_commands(options)
        self._scripts: dict[tuple[type, str], Any] = {}
        # One per asyncio client (so per event loop); dropped with the client.
        self._batchers: weakref.WeakKeyDictionary[Any, ScriptBatcher] = weakref.WeakKeyDictionary()

    # --- plumbing -----------------------------------------------------------------------

    def _script(self, client: Any, source: str) -> Any:
        """The script bound to ``client``; one Script object per source and client kind, so
        clients of short-lived event loops are not kept alive by the cache."""
        key = (type(client), source)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = client.register_script(source)
        return functools.partial(script, client=client)

    def _run_sync(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script on the sync client, down its direct lane where it has one."""
        lane = self.connections.direct
        if lane is None:
            return self._script(self.connections.sync, source)(keys=keys, args=args)
        return self._down(lane, source, "EVALSHA", _sha_of(source), len(keys), *keys, *args)

    @staticmethod
    def _down(lane: DirectLane, source: str, *command: Any, head: CommandHead | None = None) -> Any:
        """A script's call (``head`` first, if given) down the sync lane, the script loaded
        again if the server lost it."""
        try:
            return lane(*command, head=head)
        except redis.exceptions.NoScriptError:  # a restarted or flushed server: nothing ran
            lane("SCRIPT", "LOAD", source)
            return lane(*command, head=head)

    def unavailable(self, exc: redis.RedisError) -> BackendUnavailable:
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError) and "connecting" not in str(
            exc
        ):
            # The command was sent but no reply came: the script ran wholly or not at all.
            outcome = "It may or may not have been applied (a script runs wholly or not at all)"
        else:
            outcome = "Nothing was changed"
        return BackendUnavailable(
            f"Redis for task backend {self.alias!r} at {redacted(self.options.location)} failed: "
            f"{str(exc).rstrip('.')}. {outcome}; check that Redis is running and LOCATION is right."
        )

    # --- enqueue ------------------------------------------------------------------------

    @functools.cached_property
    def _enqueue_fixed_keys(self) -> tuple[str, ...]:
        k = self.keys
        return (k.queues, k.sequence, k.expiry, k.wake, k.heads, k.due)

    @functools.cached_property
    def _batch_settings(self) -> tuple[Any, ...]:
        o = self.options
        return ("" if o.maxsize is None else o.maxsize, "" if o.ttl is None else int(o.ttl * 1000),
                self.alias)  # fmt: skip

    @functools.cached_property
    def _enqueue_head(self) -> CommandHead:
        """The enqueue script's call up to its tasks: the same for every call."""
        keys = self._enqueue_fixed_keys
        return CommandHead("EVALSHA", _sha_of(scripts.ENQUEUE_SOURCE), len(keys), *keys,
                           self.keys.prefix, *self._batch_settings)  # fmt: skip

    def _batch_argv(self, requests: Sequence[EnqueueRequest]) -> list[Any]:
        return [*self._batch_settings, *self._batch_tasks(requests)]

    @staticmethod
    def _batch_tasks(requests: Sequence[EnqueueRequest]) -> list[Any]:
        argv: list[Any] = [len(requests)]
        for r in requests:
            argv += [
                r.task_id, r.queue, r.priority, "" if r.run_after_us is None else r.run_after_us,
                r.path, r.args_json, r.kwargs_json,
                r.unique_key or "", "" if r.max_attempts is None else r.max_attempts,
            ]  # fmt: skip
        return argv

    def _enqueued(self, reply: list[Any], requests: Sequence[EnqueueRequest]) -> Enqueued:
        if reply[0] == 1:
            existing = [x.decode() or None for x in reply[2:]]
            return Enqueued(int(reply[1]), existing)
        if reply[0] == 0:
            raise QueueFull(
                f"Task backend {self.alias!r} is full: {reply[1]} tasks wait and its maxsize is "
                f"{self.options.maxsize}; {len(requests)} more would pass it. Nothing was queued; "
                "run more workers or raise 'maxsize'."
            )
        raise BackendUnavailable(f"task id {reply[1]!r} already exists; nothing was queued")

    def enqueue(self, requests: Sequence[EnqueueRequest]) -> Enqueued:
        """Queue tasks, all or none, in one script call."""
        lane = self.connections.direct
        acks: list[Any] = []
        try:
            if lane is not None and not self._waits:  # the constant head packed once
                tasks = self._batch_tasks(requests)
                reply = self._down(lane, scripts.ENQUEUE_SOURCE, *tasks, head=self._enqueue_head)
            else:
                keys = list(self._enqueue_fixed_keys)
                args = [self.keys.prefix, *self._batch_argv(requests)]
                client = self.connections.sync
                script = self._script(client, scripts.ENQUEUE_SOURCE)
                if self._waits:
                    reply, acks = durability.enqueue(client, script, keys, args, self._waits)
                else:
                    reply = script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        enqueued = self._enqueued(reply, requests)
        durability.check(self.alias, self.options, acks, requests)
        return enqueued

    async def aenqueue(self, requests: Sequence[EnqueueRequest]) -> Enqueued:
        client = self.connections.aio
        script = self._script(client, scripts.ENQUEUE_SOURCE)
        keys = list(self._enqueue_fixed_keys)
        args = [self.keys.prefix, *self._batch_argv(requests)]
        try:
            reply, acks = await durability.aenqueue(client, script, keys, args, self._waits)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        enqueued = self._enqueued(reply, requests)
        durability.check(self.alias, self.options, acks, requests)
        return enqueued

    def tick(self, schedule: str, tick_ms: int, enqueue: bool, request: EnqueueRequest) -> str:
        """Enqueue one periodic tick, once however many workers call this for it.

        Returns 'enqueued', 'unique' (an identical unique task is queued), 'done' (this or a
        later tick was already handled), 'skipped' or 'full'."""
        keys = [*self._enqueue_fixed_keys, self.keys.schedule(schedule)]
        argv = [self.keys.prefix, tick_ms, "enqueue" if enqueue else "skip"]
        script = self._script(self.connections.sync, scripts.TICK_SOURCE)
        reply = script(keys=keys, args=[*argv, *self._batch_argv([request])])
        if int(reply[0]) == 1 and reply[2]:
            return "unique"  # an identical unique task already queued stands for this tick
        return {1: "enqueued", 0: "full", 2: "done", 3: "skipped"}.get(int(reply[0]), "taken")

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
            lane = self.connections.direct
            if lane is not None:
                return lane.hgetall(self.keys.task(task_id))
            return self.connections.sync.hgetall(self.keys.task(task_id))  # type: ignore[return-value]
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
        self, worker_id: str, count: int, queues: Sequence[str] = (), *, thorough: bool = False
    ) -> ClaimBatch:
        """Claim up to ``count`` tasks. The sweeps (deadlines, lost leases) and the index check
        run at most every SWEEP_MS / RECONCILE_MS across workers; ``thorough`` runs both now
        (a burst worker's last look before it exits)."""
        k, o = self.keys, self.options
        batcher = self._batcher()  # with the finishes on their way: one trip for both
        reply = await batcher.run(
            self._script(self.connections.aio, scripts.CLAIM_SOURCE).func,
            [k.running, k.expiry, k.queues, k.dead, k.wake, k.workers, k.heads, k.due,
             k.swept, k.reconciled],
            [
                k.prefix,
                worker_id,
                int(o.lease_timeout * 1000),
                count,
                o.max_attempts,
                "" if o.result_ttl is None else o.result_ttl,
                f"{worker_id}:{secrets.token_hex(4)}",
                SWEEP_MS,
                RECONCILE_MS,
                "1" if thorough else "0",
                *queues,
            ],
        )  # fmt: skip
        claims = []
        width = len(CLAIM_FIELDS)
        for entry in reply[3:]:
            values = zip(CLAIM_FIELDS, entry[:width], strict=True)
            fields = {name: value for name, value in values if value is not None}
            claims.append(Claim(entry[width].decode(), entry[width + 1].decode(), fields))
        next_due = int(reply[1])
        quarantined = [k.decode(errors="replace") for k in reply[2]]
        return ClaimBatch(int(reply[0]), None if next_due < 0 else next_due, claims, quarantined)

    def _finish_head(self) -> list[Any]:
        ttl = self.options.result_ttl
        return [self.keys.prefix, "" if ttl is None else ttl]

    @staticmethod
    def _finish_item(
        claim: Claim, status: str, return_json: str | None, error_json: str | None
    ) -> list[Any]:
        return [claim.task_id, claim.token, status, return_json or "", error_json or ""]

    def finish(
        self,
        claim: Claim,
        status: str,
        return_json: str | None = None,
        error_json: str | None = None,
    ) -> int:
        """Store the outcome; return finished_at in ms, or 0 if the lease was lost (rejected)."""
        item = self._finish_item(claim, status, return_json, error_json)
        args = [*self._finish_head(), 1, *item]
        return int(self._run_sync(scripts.FINISH_SOURCE, [self.keys.running], args)[0])

    async def afinish(
        self,
        claim: Claim,
        status: str,
        return_json: str | None = None,
        error_json: str | None = None,
    ) -> int:
        """``finish`` for the event loop: finishes made together share one script run."""
        item = self._finish_item(claim, status, return_json, error_json)
        return int(await self._batcher().call(self._finish_head(), item))

    def _batcher(self) -> ScriptBatcher:
        client = self.connections.aio
        batcher = self._batchers.get(client)
        if batcher is None:
            script = self._script(client, scripts.FINISH_SOURCE).func  # the Script object
            batcher = ScriptBatcher(client, script, [self.keys.running])
            self._batchers[client] = batcher
        return batcher

    def _requeue_call(
        self, claim: Claim, delay: float, error_json: str | None, handback: bool
    ) -> tuple[list[str], list[Any]]:
        k, ttl = self.keys, self.options.ttl
        return (
            [k.task(claim.task_id), k.running, k.expiry, k.wake, k.queues, k.heads, k.due],
            [k.prefix, claim.task_id, claim.token, int(delay * 1000), error_json or "",
             "1" if handback else "0", "" if ttl is None else int(ttl * 1000)],
        )  # fmt: skip

    def requeue(
        self, claim: Claim, delay: float = 0, error_json: str | None = None, handback: bool = False
    ) -> int:
        """Put an owned task back: a retry after ``delay`` seconds, or a graceful hand-back.
        Returns when it is due again (ms), or 0 if the lease was lost (nothing changed)."""
        key_list, argv = self._requeue_call(claim, delay, error_json, handback)
        return int(
            self._script(self.connections.sync, scripts.REQUEUE_SOURCE)(keys=key_list, args=argv)
        )

    async def arequeue(
        self, claim: Claim, delay: float = 0, error_json: str | None = None, handback: bool = False
    ) -> int:
        key_list, argv = self._requeue_call(claim, delay, error_json, handback)
        script = self._script(self.connections.aio, scripts.REQUEUE_SOURCE)
        return int(await script(keys=key_list, args=argv))

    def renew(self, client: SyncClient, leases: dict[str, str]) -> list[str]:
        """Extend the leases still held; return the ids whose lease was taken."""
        argv: list[Any] = [self.keys.prefix, int(self.options.lease_timeout * 1000)]
        for task_id, token in leases.items():
            argv += [task_id, token]
        lost = self._script(client, scripts.RENEW_SOURCE)(keys=[self.keys.running], args=argv)
        return [x.decode() for x in lost]

    def register_worker(
        self, client: SyncClient, worker_id: str, info: dict[str, Any], ttl: float
    ) -> None:
        """Announce a live worker; it vanishes by itself ``ttl`` seconds after its last call."""
        seconds, micros = client.time()
        deadline = seconds * 1000 + micros // 1000 + int(ttl * 1000)
        pipe = client.pipeline(transaction=True)
        pipe.zadd(self.keys.workers, {worker_id: deadline})
        pipe.hset(self.keys.worker(worker_id), "info", serialization_dumps(info))
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

    async def wait_for_work(self, timeout: float) -> None:
        """Block until an enqueue signals new work, or ``timeout`` seconds pass."""
        await self.connections.aio.blpop([self.keys.wake], timeout=max(timeout, 0.001))
