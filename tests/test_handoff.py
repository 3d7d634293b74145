"""The hand-off at enqueue (lua/lib/handoff.lua, lua/lib/parking.lua): a task queued while a
worker waits goes to that worker inside the enqueue script, leased to it, and reaches it
without a claim's round trip.

What is checked: the task handed over is owned exactly as a claimed one (status, token, lease);
what the worker's own claim would have taken is what is handed over (the best of a batch; not
while a better task of another queue it serves is due, nor past a limit or a pause); a task
handed to a worker whose wait ended anyway comes with its next claim; a worker that stops
while parked leaves the list and one that dies parked loses nothing (the lease returns the
task); and a real worker runs tasks handed to it, with its own due-time timers racing the
hand-offs, each task once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from django.utils import timezone

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.ops import Inspector
from redis_tasks.store import Claim, TaskStore
from tests import tasks
from tests.helpers import burst, child_env, manage, stop_processes, wait_until

WORKER = "parked-test"


def backend(alias: str = "default") -> RedisBackend:
    return task_backends[alias]  # type: ignore[return-value]


def store(alias: str = "default") -> TaskStore:
    return backend(alias).store


def claim(
    count: int = 1, queues: tuple[str, ...] = (), parked: bool = False, alias: str = "default"
) -> list[Claim]:
    """A claim for the test's worker id, parking it when the queues run dry."""
    batch = asyncio.run(store(alias).claim(WORKER, count, queues, park_ms=5000, parked=parked))
    return batch.claims


def inbox(client: redis.Redis, alias: str = "default") -> list[dict[str, Any]]:
    rows = client.lrange(store(alias).keys.inbox(WORKER), 0, -1)
    return [json.loads(row) for row in rows]


def handed_off(client: redis.Redis, alias: str = "default") -> int:
    return int(client.hget(store(alias).keys.prefix + "stats", "handed_off") or 0)


def is_parked(client: redis.Redis, worker_id: str = WORKER, alias: str = "default") -> bool:
    return bool(client.hexists(store(alias).keys.parking, worker_id))


def test_a_task_queued_while_a_worker_waits_is_handed_to_it_leased(
    clean_redis: redis.Redis,
) -> None:
    assert claim(2) == []  # dry: parked
    assert is_parked(clean_redis)
    result = tasks.add.enqueue(2, 3)
    keys = store().keys
    row = inbox(clean_redis)
    assert len(row) == 1 and row[0][-2] == result.id
    owner, status = clean_redis.hmget(keys.task(result.id), "owner", "status")
    assert status == b"RUNNING" and owner.decode() == row[0][-1]
    assert clean_redis.zscore(keys.running, result.id) is not None  # leased: the sweep watches
    assert clean_redis.zcard(keys.ready("task_queue")) == 0
    assert clean_redis.llen(keys.wake) == 0  # nobody else is woken for it
    assert handed_off(clean_redis) == 1
    handed = asyncio.run(store().wait_for_work(WORKER, 1.0))
    assert handed is not None and handed.task_id == result.id
    assert handed.fields[b"path"] == b"tests.tasks.add" and b"errors" not in handed.fields
    assert asyncio.run(store().afinish(handed, "SUCCESSFUL", "5")) > 0
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    # It asked for two: parked still, for one more, which fills its room and unparks it.
    assert is_parked(clean_redis)
    second = tasks.add.enqueue(1, 1)
    assert [r[-2] for r in inbox(clean_redis)] == [second.id] and not is_parked(clean_redis)
    waiting = tasks.add.enqueue(1, 1)  # nobody parked: it waits for a claim, and wakes workers
    assert len(inbox(clean_redis)) == 1 and clean_redis.llen(keys.wake) == 1
    assert [c.task_id for c in claim(2)] == [waiting.id]


def test_as_many_tasks_as_it_has_room_for_and_the_rest_wait_in_priority_order(
    clean_redis: redis.Redis,
) -> None:
    assert claim(4) == []
    low = tasks.add.using(priority=-10).enqueue(1, 1)
    assert [r[-2] for r in inbox(clean_redis)] == [low.id]
    assert claim(2, parked=True)[0].task_id == low.id  # its wait ended: the claim brings it
    stats = clean_redis.hgetall(store().keys.prefix + "stats")
    assert stats[b"started"] == stats[b"handed_off"] == b"1"  # counted once, at the hand-off
    assert inbox(clean_redis) == [] and is_parked(clean_redis)  # with room for one
    b = backend()
    results = b.enqueue_many(tasks.add.using(priority=-5), [((n, n), {}) for n in range(3)])
    assert [r[-2] for r in inbox(clean_redis)] == [results[0].id]  # the first, in FIFO order
    assert not is_parked(clean_redis) and clean_redis.llen(store().keys.wake) == 1
    high = tasks.add.using(priority=50).enqueue(9, 9)  # nobody parked: queued
    claimed = [c.task_id for c in claim(9, parked=True)]
    assert claimed == [results[0].id, high.id, results[1].id, results[2].id]


def test_a_batch_hands_over_its_best_task(clean_redis: redis.Redis) -> None:
    """Two priorities in one script call (the public API sends one task's calls at a time,
    so the batch is put together from the backend's own parts here)."""
    assert claim(1) == []
    b = backend()
    low = b.prepare_many(tasks.add.using(priority=-10), [((1, 1), {})])
    high = b.prepare_many(tasks.add.using(priority=90), [((2, 2), {})])
    b.store.enqueue(low[1] + high[1])  # one script call, two priorities
    assert [r[-2] for r in inbox(clean_redis)] == [high[0][0].id]


def test_no_hand_off_while_a_better_task_of_another_served_queue_is_due(
    clean_redis: redis.Redis,
) -> None:
    assert claim(1, queues=("a", "b")) == []
    due_at = timezone.now() + timedelta(milliseconds=300)
    urgent = tasks.add.using(queue_name="b", priority=80, run_after=due_at).enqueue(1, 1)
    assert inbox(clean_redis) == []  # deferred: not handed over
    wait_until(lambda: timezone.now() > due_at + timedelta(milliseconds=20))
    tasks.add.using(queue_name="a").enqueue(2, 2)
    assert inbox(clean_redis) == [] and is_parked(clean_redis)  # declined: the claim decides
    assert claim(1, queues=("a", "b"), parked=True)[0].task_id == urgent.id


def test_no_hand_off_past_a_limit_or_into_a_paused_queue(clean_redis: redis.Redis) -> None:
    assert claim(4) == []
    tasks.two_at_once.enqueue("/dev/null", 1)  # a limit of its own
    Inspector(backend()).pause("held")
    tasks.add.using(queue_name="held").enqueue(1, 1)
    assert inbox(clean_redis) == [] and handed_off(clean_redis) == 0
    # A queue limit from the settings (the claim applies it).
    assert claim(4, alias="limited") == []
    tasks.add.using(backend="limited", queue_name="slow").enqueue(1, 1)
    assert inbox(clean_redis, "limited") == [] and handed_off(clean_redis, "limited") == 0
    # (The task held back would come first in the claim at the same priority: a better one.)
    free = tasks.add.using(backend="limited", queue_name="fast", priority=10).enqueue(1, 1)
    assert [r[-2] for r in inbox(clean_redis, "limited")] == [free.id]


def test_a_parked_worker_that_stops_leaves_the_list(background: Any) -> None:
    client = store().connections.sync
    worker = background(concurrency=2)
    wait_until(lambda: is_parked(client, worker.worker_id))
    worker.request_stop()
    wait_until(lambda: not is_parked(client, worker.worker_id))
    result = tasks.add.enqueue(1, 1)
    assert handed_off(client) == 0
    result.refresh()
    assert result.status == TaskResultStatus.READY


def test_a_worker_killed_while_parked_loses_nothing(tmp_path: Path) -> None:
    """Handed to a worker killed (SIGKILL) while it waited: the lease returns the task, which
    then runs on another worker."""
    client = store().connections.sync
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    env = child_env(REDIS_TASKS_TEST_LEASE="1")
    proc = manage("redis_tasks_worker", env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: client.hlen(store().keys.parking) == 1, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        result = tasks.add.enqueue(4, 5)
        assert handed_off(client) == 1  # to the dead worker (parked a moment more)
        result.refresh()
        assert result.status == TaskResultStatus.RUNNING
    finally:
        stop_processes([proc])
    lease_ends = time.monotonic() + 1.5
    wait_until(lambda: time.monotonic() > lease_ends)
    burst()  # its first claim sweeps the lost lease now
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 9
    assert [e.exception_class_path for e in result.errors] == ["redis_tasks.exceptions.WorkerLost"]


def test_a_worker_runs_what_is_handed_to_it_while_its_timers_race(background: Any) -> None:
    """Deferred tasks coming due every few milliseconds end the worker's wait by its own timer
    (lua/lib/parking.lua: a blank inbox entry, never a cancelled wait) while tasks are handed to
    it: every task runs once, none is left to a lease."""
    client = store().connections.sync
    worker = background(concurrency=4)
    wait_until(lambda: is_parked(client, worker.worker_id))
    start = timezone.now()
    deferred = [
        tasks.add.using(run_after=start + timedelta(milliseconds=20 + 7 * n)).enqueue(n, 0)
        for n in range(40)
    ]
    now = []
    for n in range(80):
        now.append(tasks.add.enqueue(n, 1))
        time.sleep(0.003)  # the worker waits again between them

    def all_done() -> bool:
        for r in deferred + now:
            r.refresh()
        return all(r.status == TaskResultStatus.SUCCESSFUL for r in deferred + now)

    wait_until(all_done, timeout=30, every=0.05)
    assert all(len(r.worker_ids) == 1 and not r.errors for r in deferred + now)
    assert handed_off(client) > 0
