"""Commit-aware enqueue (PostgreSQL transactions), bulk enqueue and unique tasks."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.db import transaction

from redis_tasks.compat import TaskResultDoesNotExist, TaskResultStatus, task_backends
from redis_tasks.exceptions import QueueFull
from redis_tasks.keys import Keys
from tests import tasks
from tests.helpers import burst

on_commit = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def stored(result: Any, alias: str = "on_commit") -> bool:
    try:
        task_backends[alias].get_result(result.id)
    except TaskResultDoesNotExist:
        return False
    return True


# --- commit-aware enqueue -------------------------------------------------------------------


@on_commit
def test_enqueue_in_a_transaction_waits_for_the_commit() -> None:
    with transaction.atomic():
        result = tasks.add.using(backend="on_commit").enqueue(1, 2)
        assert result.id and result.status == TaskResultStatus.READY  # the caller has it now
        assert not stored(result)
    assert stored(result)
    burst("on_commit")
    result.refresh()
    assert result.return_value == 3


@on_commit
def test_enqueue_in_a_rolled_back_transaction_never_happens() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.using(backend="on_commit").enqueue(1, 2)
        raise RuntimeError("roll back")
    assert not stored(result)


@on_commit
def test_nested_atomic_and_savepoints() -> None:
    with transaction.atomic():
        outer = tasks.add.using(backend="on_commit").enqueue(1, 1)
        with transaction.atomic():
            kept = tasks.add.using(backend="on_commit").enqueue(2, 2)
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back
            dropped = tasks.add.using(backend="on_commit").enqueue(3, 3)
            raise RuntimeError
        assert not any(stored(r) for r in (outer, kept, dropped))
    assert stored(outer) and stored(kept) and not stored(dropped)


@on_commit
def test_outside_a_transaction_enqueue_is_immediate() -> None:
    result = tasks.add.using(backend="on_commit").enqueue(1, 2)
    assert stored(result) and result.enqueued_at is not None


@on_commit
def test_async_enqueue_waits_for_the_transaction_of_its_sync_caller() -> None:
    async def enqueue() -> Any:
        return await tasks.add.using(backend="on_commit").aenqueue(5, 5)

    with transaction.atomic():
        result = async_to_sync(enqueue)()
        assert not stored(result)
    assert stored(result)


@on_commit
async def test_async_enqueue_outside_a_transaction_is_immediate() -> None:
    result = await tasks.add.using(backend="on_commit").aenqueue(5, 5)
    assert (await task_backends["on_commit"].aget_result(result.id)).args == [5, 5]


@on_commit
def test_the_named_database_alias_is_the_one_that_counts() -> None:
    backend = tasks.add.using(backend="on_commit_other_db")
    with transaction.atomic(using="default"):
        immediate = backend.enqueue(1, 1)
        assert stored(immediate, "on_commit_other_db")
    with transaction.atomic(using="other"):
        deferred = backend.enqueue(1, 1)
        assert not stored(deferred, "on_commit_other_db")
    assert stored(deferred, "on_commit_other_db")


@on_commit
def test_a_failure_at_commit_time_reaches_the_caller(settings: Any) -> None:
    from redis_tasks.exceptions import BackendUnavailable
    from tests.redis_server import free_port

    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    settings.TASKS = {
        **settings.TASKS,
        "on_commit": {**settings.TASKS["on_commit"], "LOCATION": unreachable},
    }
    with pytest.raises(BackendUnavailable), transaction.atomic():
        tasks.add.using(backend="on_commit").enqueue(1, 2)


# --- bulk enqueue ---------------------------------------------------------------------------


def test_enqueue_many_is_one_round_trip(clean_redis: redis.Redis) -> None:
    backend = task_backends["default"]
    backend.enqueue(tasks.add, (0, 0), {})  # the script loaded (another test may flush it)
    before = clean_redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    results = backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(50)])
    after = clean_redis.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert after - before == 1
    assert len({r.id for r in results}) == 50 and all(r.enqueued_at for r in results)
    # Each id is 32 hex digits of its own (the batch's random bytes are read at once).
    assert all(len(r.id) == 32 and int(r.id, 16) >= 0 for r in results)
    generated = (call for call in [((7, 7), {})] * 3)  # any iterable of calls
    assert len({r.id for r in backend.enqueue_many(tasks.add, generated)}) == 3
    burst()
    assert [tasks.add.get_result(r.id).return_value for r in results] == [2 * i for i in range(50)]


def test_enqueue_many_is_all_or_nothing_against_maxsize(clean_redis: redis.Redis) -> None:
    backend = task_backends["default"]
    backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(60)])
    with pytest.raises(QueueFull, match="5 more would pass it"):
        backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(5)])
    assert clean_redis.zcard(Keys("task_queue").ready("default")) == 60
    assert len(backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(4)])) == 4


async def test_aenqueue_many() -> None:
    backend = task_backends["default"]
    results = await backend.aenqueue_many(tasks.add, [((1, 2), {}), ((3, 4), {})])
    assert [(await backend.aget_result(r.id)).args for r in results] == [[1, 2], [3, 4]]


# --- unique tasks ---------------------------------------------------------------------------


def test_an_identical_call_returns_the_queued_task() -> None:
    first = tasks.unique_call.enqueue(1)
    again = tasks.unique_call.enqueue(1)
    other = tasks.unique_call.enqueue(2)
    assert again.id == first.id and other.id != first.id
    burst()
    after = tasks.unique_call.enqueue(1)  # the first finished: a new one may be queued
    assert after.id != first.id


def test_unique_by_fixed_key_and_by_callable() -> None:
    assert tasks.unique_by_name.enqueue(1).id == tasks.unique_by_name.enqueue(2).id
    a = tasks.unique_by_account.enqueue(7, amount=1)
    assert tasks.unique_by_account.enqueue(7, amount=2).id == a.id
    assert tasks.unique_by_account.enqueue(8, amount=1).id != a.id


def test_a_running_unique_task_also_counts() -> None:
    first = tasks.unique_call.enqueue(3)
    import asyncio

    batch = asyncio.run(task_backends["default"].store.claim("some-worker", 1))
    assert [c.task_id for c in batch.claims] == [first.id]  # running now
    assert tasks.unique_call.enqueue(3).id == first.id


def test_a_unique_key_held_by_a_task_that_will_never_run_is_taken_over(
    clean_redis: redis.Redis,
) -> None:
    first = tasks.unique_call.enqueue(4)
    clean_redis.zrem(Keys("task_queue").ready("default"), first.id)  # lost from its queue
    assert tasks.unique_call.enqueue(4).id != first.id


def test_unique_enqueue_is_atomic_under_concurrent_enqueuers(clean_redis: redis.Redis) -> None:
    ids: list[str] = []
    start = threading.Barrier(8)

    def enqueue() -> None:
        start.wait()
        ids.append(tasks.unique_call.enqueue(42).id)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert clean_redis.zcard(Keys("task_queue").ready("default")) == 1


def test_unique_keys_are_released_when_the_task_ends(clean_redis: redis.Redis) -> None:
    tasks.unique_call.enqueue(9)
    assert clean_redis.keys(Keys("task_queue").unique("*"))
    burst()
    assert clean_redis.keys(Keys("task_queue").unique("*")) == []


def test_unique_ignores_the_order_of_keyword_arguments() -> None:
    first = task_backends["default"].enqueue(tasks.unique_call, [], {"value": 1, "z": 2})
    again = task_backends["default"].enqueue(tasks.unique_call, [], {"z": 2, "value": 1})
    assert again.id == first.id


def test_an_operator_retry_takes_the_unique_key_back() -> None:
    from redis_tasks.ops import Inspector, OperationRefused

    inspector = Inspector(task_backends["default"])
    first = tasks.unique_by_name.enqueue(1)
    inspector.cancel(first.id)  # releases the key
    second = tasks.unique_by_name.enqueue(2)
    with pytest.raises(OperationRefused, match="same unique key is queued"):
        inspector.retry(first.id)
    inspector.cancel(second.id)
    inspector.retry(first.id)
    assert tasks.unique_by_name.enqueue(3).id == first.id


def test_an_unknown_commit_database_is_a_check_error(settings: Any) -> None:
    from redis_tasks.backend import RedisBackend

    backend = RedisBackend("x", {"BACKEND": "x", "enqueue_on_commit": "nope"})
    [error] = backend.check()
    assert error.id == "redis_tasks.E002" and "'nope'" in error.msg
