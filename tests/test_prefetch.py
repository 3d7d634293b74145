"""Prefetch (redis_tasks_worker --prefetch N, redis_tasks.prefetch): a worker claims and leases
more tasks than it runs at once, starts them best priority first, gives the ones not started
back at once when it stops, and ends a waiting one unrun when an operator cancels it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.keys import Keys
from redis_tasks.ops import Inspector
from redis_tasks.prefetch import RunGate
from redis_tasks.waiting import wait
from tests import tasks
from tests.helpers import wait_until

K = Keys("task_queue")


def blocking(tmp_path: Path, count: int) -> tuple[list[Any], list[Path], Path]:
    """``count`` tasks that each note their start, then wait for one release file."""
    release = tmp_path / "release"
    started = [tmp_path / f"started-{i}" for i in range(count)]
    results = [tasks.wait_for_file.enqueue(str(s), str(release)) for s in started]
    return results, started, release


async def test_the_gate_lets_the_best_priority_in_first_then_the_first_come() -> None:
    gate, entered = RunGate(1), []
    await gate.enter(0)  # the one place is taken

    async def wait_then_note(name: str, priority: int) -> None:
        await gate.enter(priority)
        entered.append(name)

    waiters = [asyncio.create_task(wait_then_note(n, p))
               for n, p in (("low", -5), ("first", 3), ("second", 3), ("top", 50))]  # fmt: skip
    cancelled = asyncio.create_task(wait_then_note("cancelled", 100))
    await asyncio.sleep(0)  # every waiter is queued
    cancelled.cancel()
    for _ in waiters:
        gate.leave()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert entered == ["top", "first", "second", "low"] and gate.free == 0


def test_a_prefetching_worker_leases_more_than_it_runs(
    background: Any, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    results, started, release = blocking(tmp_path, 4)
    background(concurrency=1, prefetch=3)
    wait_until(lambda: any(s.exists() for s in started))
    wait_until(lambda: clean_redis.zcard(K.running) == 4)  # all four claimed in one trip
    assert sum(s.exists() for s in started) == 1  # one body at a time
    release.touch()
    assert all(wait(r, timeout=30).status == TaskResultStatus.SUCCESSFUL for r in results)


def test_a_stop_gives_the_prefetched_tasks_back_at_once(
    background: Any, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    results, started, release = blocking(tmp_path, 3)
    worker = background(concurrency=1, prefetch=2, grace=60)
    wait_until(lambda: any(s.exists() for s in started))
    wait_until(lambda: clean_redis.zcard(K.running) == 3)
    worker.request_stop()
    # Well within the 60 s grace, which the running one still has.
    wait_until(lambda: clean_redis.zcard(K.ready("default")) == 2, timeout=10)
    release.touch()
    statuses = [wait(r, timeout=30).status if s.exists() else (r.refresh() or r.status)
                for r, s in zip(results, started, strict=True)]  # fmt: skip
    assert sorted(statuses) == sorted([TaskResultStatus.SUCCESSFUL, TaskResultStatus.READY,
                                       TaskResultStatus.READY])  # fmt: skip
    assert sum(s.exists() for s in started) == 1


def test_a_cancelled_prefetched_task_ends_unrun(background: Any, tmp_path: Path) -> None:
    (first, second), started, release = blocking(tmp_path, 2)
    background(concurrency=1, prefetch=1)
    wait_until(lambda: any(s.exists() for s in started))
    waiting = second if started[0].exists() else first
    Inspector(task_backends["default"]).cancel(waiting.id)
    cancelled = wait(waiting, timeout=10)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[-1].exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    assert sum(s.exists() for s in started) == 1
    release.touch()
    other = first if waiting is second else second
    assert wait(other, timeout=30).status == TaskResultStatus.SUCCESSFUL
