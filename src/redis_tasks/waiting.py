"""Waiting for a task (or a workflow) to finish, without polling.

    from redis_tasks.waiting import wait, await_result

    result = send_report.enqueue(42)
    wait(result, timeout=30)            # returns once it finished (result refreshed)
    await await_result(result, timeout=30)

A waiter counts itself in ``waiting:<id>`` (with an expiry) and then looks at the task: one that
finished before the wait began is answered at once. Otherwise it blocks on ``notify:<id>``, where
the script that stores the task's final outcome pushes one token per waiter (lua/lib/
notify.lua), so it wakes within a round trip of the finish. It blocks at most a second at a
time and looks again, so a waiter whose connection dropped, or a token lost to a Redis restart,
costs at most that second. Blocking lists rather than pub/sub: a token waits for its waiter
(a message published while a waiter reconnects would be lost), and nothing is pushed when
nobody waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from .compat import task_backends
from .exceptions import WaitTimeout

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .workflows import WorkflowHandle

SLICE = 1.0  # seconds a waiter blocks before it looks again
FINAL = (b"SUCCESSFUL", b"FAILED")


def _remaining(deadline: float | None) -> float:
    return SLICE if deadline is None else min(SLICE, deadline - time.monotonic())


def _backend(result: Any) -> RedisBackend:
    return _redis(result.backend)


def _redis(alias: str) -> RedisBackend:
    return cast("RedisBackend", task_backends[alias])


def wait_for_id(backend: RedisBackend, task_id: str, timeout: float | None = None) -> None:
    """Block until the task ``task_id`` has a final outcome (SUCCESSFUL or FAILED)."""
    keys, client = backend.store.keys, backend.store.connections.sync
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting, notify = keys.waiting(task_id), keys.notify(task_id)
    pipe = client.pipeline(transaction=True)
    pipe.incr(waiting)
    pipe.pexpire(waiting, int(((timeout or 3600) + 5) * 1000))
    pipe.execute()
    try:
        while True:
            if client.hget(keys.task(task_id), "status") in FINAL:
                return
            left = _remaining(deadline)
            if left <= 0:
                raise WaitTimeout(task_id, timeout)
            client.blpop([notify], timeout=max(left, 0.01))
    finally:
        client.decr(waiting)


async def await_id(backend: RedisBackend, task_id: str, timeout: float | None = None) -> None:
    keys, client = backend.store.keys, backend.store.connections.aio
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting, notify = keys.waiting(task_id), keys.notify(task_id)
    pipe = client.pipeline(transaction=True)
    pipe.incr(waiting)
    pipe.pexpire(waiting, int(((timeout or 3600) + 5) * 1000))
    await pipe.execute()
    try:
        while True:
            if await client.hget(keys.task(task_id), "status") in FINAL:
                return
            left = _remaining(deadline)
            if left <= 0:
                raise WaitTimeout(task_id, timeout)
            await client.blpop([notify], timeout=max(left, 0.01))
    finally:
        await asyncio.shield(client.decr(waiting))


def wait(result: Any, timeout: float | None = None) -> Any:
    """Block until ``result``'s task finished; return it refreshed. ``WaitTimeout`` (a
    ``TimeoutError``) after ``timeout`` seconds, the task still running or waiting."""
    wait_for_id(_backend(result), result.id, timeout)
    result.refresh()
    return result


async def await_result(result: Any, timeout: float | None = None) -> Any:
    await await_id(_backend(result), result.id, timeout)
    await result.arefresh()
    return result


def wait_for_all(backend: RedisBackend, task_ids: Iterable[str], timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    for task_id in task_ids:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        wait_for_id(backend, task_id, left)


def wait_for_workflow(handle: WorkflowHandle, timeout: float | None) -> None:
    """Until the workflow's final task ended (a group: every member); a chain whose step
    failed ends there (its later steps are recorded at once)."""
    backend = _redis(handle.backend)
    final = handle.final_id()
    wait_for_all(backend, [final] if final else handle.task_ids, timeout)
