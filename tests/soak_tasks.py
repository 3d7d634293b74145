"""The soak's tasks (tests/soak.py). Each writes to an independent ledger in PostgreSQL, in a
transaction, as it starts and as it ends, so that the soak can count executions without asking
Redis: a task whose body ran twice has two 'start' rows."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection, transaction

from redis_tasks.compat import task
from redis_tasks.task import task as redis_task

TABLE = os.environ.get("REDIS_TASKS_SOAK_TABLE", "redis_tasks_soak_ledger")


def ledger(key: str, kind: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (key, kind, pid, ppid, at) VALUES (%s, %s, %s, %s, %s)",
            [key, kind, os.getpid(), os.getppid(), time.time()],
        )


@task()
def sync_job(key: str, seconds: float = 0.0) -> str:
    ledger(key, "start")
    if seconds:
        time.sleep(seconds)
    ledger(key, "end")
    return key


@task()
async def async_job(key: str, seconds: float = 0.0) -> str:
    await sync_to_async(ledger)(key, "start")
    await asyncio.sleep(seconds)
    await sync_to_async(ledger)(key, "end")
    return key


@task(takes_context=True)
def flaky_job(context: Any, key: str) -> int:
    """Fails its first attempt (ConnectionError, which the soak's backend retries)."""
    ledger(key, "start")
    if context.attempt == 1:
        raise ConnectionError("the first attempt fails, on purpose")
    ledger(key, "end")
    return int(context.attempt)


@redis_task(unique=True, takes_context=True)
def unique_job(context: Any, key: str) -> str:
    """Many calls share a key: the ledger tells the tasks apart by their ids."""
    own = f"{key}:{context.task_result.id}"
    ledger(own, "start")
    time.sleep(0.05)
    ledger(own, "end")
    return key


@task()
def pg_job(key: str) -> str:
    """Two rows in one transaction: both or neither."""
    with transaction.atomic():
        ledger(key, "start")
        ledger(key, "end")
    return key


@task(takes_context=True)
def tick(context: Any) -> str:
    """The soak's periodic task (every second); its key is its own id."""
    key = f"tick:{context.task_result.id}"
    ledger(key, "start")
    ledger(key, "end")
    return key


@redis_task(concurrency_limit=2, limit_key="group")
def limited_job(key: str, group: int) -> str:
    """At most two of a group at once, across the workers (flow control under faults)."""
    ledger(key, "start")
    time.sleep(0.05)
    ledger(key, "end")
    return key


@redis_task(rate_limit="5/s")
async def metered_job(key: str) -> str:
    """At most five starts a second, across the workers."""
    await sync_to_async(ledger)(key, "start")
    await sync_to_async(ledger)(key, "end")
    return key
