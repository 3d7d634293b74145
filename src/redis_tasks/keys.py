"""Every Redis key name of a backend instance, built here and nowhere else.

All keys of one backend instance start with ``redis_tasks:{<namespace>}:``. The braces are a
Redis Cluster hash tag: every key of the instance (every queue, every task) hashes to one slot,
so each Lua script, which touches several queues and tasks at once, runs on a cluster too.
The scripts build per-queue and per-task keys from the prefix and the suffixes below, which
``scripts.py`` splices into their source, so a key's spelling lives only in this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

ROOT = "redis_tasks"

# Suffixes, after the instance prefix.
SEQUENCE = "seq"  # string: counter giving FIFO order within a priority
QUEUES = "queues"  # set: every queue name that holds tasks (forgotten once empty)
HEADS = "heads"  # sorted set: queue with ready tasks -> lower bound of its best ready score
DUE = "due"  # sorted set: queue with deferred tasks -> lower bound of its earliest run_after (ms)
SWEPT = "swept"  # string with a PX expiry: when the claim's sweeps may run again (ms)
RECONCILED = "reconciled"  # string with a PX expiry: when the index may be checked again (ms)
READY = "ready:"  # + queue; sorted set: task id -> priority/sequence score
DEFERRED = "deferred:"  # + queue; sorted set: task id -> run_after (ms, Redis clock)
RUNNING = "running"  # sorted set: task id -> lease deadline (ms, Redis clock)
EXPIRY = "expiry"  # sorted set: waiting task id -> dispatch deadline from `ttl` (ms)
WAKE = "wake"  # list: one token per enqueue, idle workers BLPOP it
DEAD = "dead"  # sorted set: ids of entries that could not be handled -> time moved aside
TASK = "task:"  # + task id; hash: the task and its result
DONE = "done:"  # + SUCCESSFUL or FAILED; sorted set: finished ids kept -> finished_at (ms)
STATS = "stats"  # hash: event counters (enqueued, started, succeeded, failed, retried, ...)
SERIES = "series"  # hash: '<minute>:<name>' -> the last hour's counts and depth (series.py)
MINUTE = "minute"  # hash: '<minute>:<event>' -> the current minute's counts (series.py)
WORKERS = "workers"  # sorted set: live worker ids -> heartbeat deadline (ms)
WORKER = "worker:"  # + worker id; hash: what the worker reports about itself (expires)
UNIQUE = "unique:"  # + unique key; string: id of the queued or running task holding the key
SCHEDULE = "schedule:"  # + schedule name; hash: `last` tick (ms) enqueued
# Flow control (limits.py, lua/lib/limits.lua):
CSLOTS = "cslots:"  # + limit group; set: ids holding a slot of its concurrency limit
RSTARTS = "rstarts:"  # + limit group; sorted set: '<id>:<token>' -> start (ms), last period
HELD = "held:"  # + 'c:' or 'r:' + group; sorted set: ids a limit holds back -> ready score
HELD_DUE = "held_due"  # sorted set: '<group>|<count>|<period_ms>' -> when its window opens
HELD_N = "held_n"  # hash: queue -> tasks held back
PAUSED = "paused"  # set: queues no worker claims from
CANCEL = "cancel:"  # + worker id; list: ids of its running tasks an operator cancelled
WORKFLOW = "workflow:"  # + workflow id; hash: a chain, group or chord (lua/lib/workflow.lua)
WAITING = "waiting:"  # + task id; string with an expiry: someone waits for its outcome
NOTIFY = "notify:"  # + task id; list: a token per final outcome, for its waiters
# Hand-off at enqueue (lua/lib/parking.lua, lua/lib/handoff.lua):
PARKED = "parked:"  # + queue; sorted set: idle worker id parked on the queue -> until (ms)
PARKED_ANY = "parked_any"  # sorted set: idle worker serving every queue -> until (ms)
PARKING = "parking"  # hash: parked worker id -> JSON [queues, lease_ms, limited queues, until]
INBOX = "inbox:"  # + worker id; list: the task handed to it at enqueue, leased (a JSON claim row)


def prefix_for(namespace: str) -> str:
    return f"{ROOT}:{{{namespace}}}:"


@dataclass(frozen=True)
class Keys:
    """The keys of one backend instance (one namespace)."""

    namespace: str

    @functools.cached_property
    def prefix(self) -> str:
        return prefix_for(self.namespace)

    @property
    def sequence(self) -> str:
        return self.prefix + SEQUENCE

    @property
    def queues(self) -> str:
        return self.prefix + QUEUES

    @property
    def heads(self) -> str:
        return self.prefix + HEADS

    @property
    def due(self) -> str:
        return self.prefix + DUE

    @property
    def swept(self) -> str:
        return self.prefix + SWEPT

    @property
    def reconciled(self) -> str:
        return self.prefix + RECONCILED

    @property
    def running(self) -> str:
        return self.prefix + RUNNING

    @property
    def expiry(self) -> str:
        return self.prefix + EXPIRY

    @property
    def wake(self) -> str:
        return self.prefix + WAKE

    @property
    def dead(self) -> str:
        return self.prefix + DEAD

    def ready(self, queue: str) -> str:
        return self.prefix + READY + queue

    def deferred(self, queue: str) -> str:
        return self.prefix + DEFERRED + queue

    def task(self, task_id: str) -> str:
        return self.prefix + TASK + task_id

    def done(self, status: str) -> str:
        return self.prefix + DONE + status

    @property
    def stats(self) -> str:
        return self.prefix + STATS

    @property
    def series(self) -> str:
        return self.prefix + SERIES

    @property
    def minute(self) -> str:
        return self.prefix + MINUTE

    @property
    def workers(self) -> str:
        return self.prefix + WORKERS

    def worker(self, worker_id: str) -> str:
        return self.prefix + WORKER + worker_id

    def unique(self, key: str) -> str:
        return self.prefix + UNIQUE + key

    def schedule(self, name: str) -> str:
        return self.prefix + SCHEDULE + name

    @property
    def paused(self) -> str:
        return self.prefix + PAUSED

    @property
    def held_n(self) -> str:
        return self.prefix + HELD_N

    @property
    def held_due(self) -> str:
        return self.prefix + HELD_DUE

    def cslots(self, group: str) -> str:
        return self.prefix + CSLOTS + group

    def cancel(self, worker_id: str) -> str:
        return self.prefix + CANCEL + worker_id

    def workflow(self, workflow_id: str) -> str:
        return self.prefix + WORKFLOW + workflow_id

    def waiting(self, task_id: str) -> str:
        return self.prefix + WAITING + task_id

    def notify(self, task_id: str) -> str:
        return self.prefix + NOTIFY + task_id

    def inbox(self, worker_id: str) -> str:
        return self.prefix + INBOX + worker_id

    @property
    def parking(self) -> str:
        return self.prefix + PARKING

    def parked(self, queue: str | None) -> str:
        """The idle workers parked on ``queue`` (None: those serving every queue)."""
        return self.prefix + (PARKED_ANY if queue is None else PARKED + queue)
