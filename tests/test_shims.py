"""Contract tests of the shims (redis_tasks/shims/): each checks that the part of a dependency a
shim reaches into is still there and behaves as the shim assumes, so that a new Django,
redis-py or Python fails here, loudly, rather than half-building results elsewhere."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import subprocess
import sys
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.utils import HIREDIS_AVAILABLE

from redis_tasks.compat import TaskResult, TaskResultStatus, task_finished
from redis_tasks.shims import django as django_shim
from redis_tasks.shims import redis_py
from tests import tasks
from tests.helpers import child_env
from tests.redis_server import RedisServer

# --- redis-py ---------------------------------------------------------------------------------


def test_the_installed_redis_py_is_one_the_lanes_were_checked_against_or_they_stay_off(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert (redis_py.DirectLane.for_client(client) is not None) == redis_py.checked()
    monkeypatch.setattr(redis_py, "CHECKED", ())  # an unchecked release: redis-py's own path
    assert redis_py.DirectLane.for_client(client) is None
    assert (
        redis_py.AsyncDirectLane.for_client(redis.asyncio.Redis.from_url(redis_server.url)) is None
    )


@pytest.mark.skipif(not redis_py.checked(), reason="the lanes are off on this redis-py")
def test_redis_py_connections_have_what_the_lanes_use(redis_server: RedisServer) -> None:
    for cls in (redis.Connection, redis.asyncio.Connection):
        for name in ("can_read", "send_packed_command", "read_response", "disconnect",
                     "pack_commands"):  # fmt: skip
            assert callable(getattr(cls, name)), (cls, name)
    pool = redis.ConnectionPool.from_url(redis_server.url)
    assert "encoding" in pool.connection_kwargs or pool.connection_kwargs is not None
    conn = pool.get_connection()  # no command name asked for
    assert hasattr(conn, "retry") and callable(conn.retry.call_with_retry)
    pool.release(conn)

    async def writer_of_a_connection() -> Any:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            conn = await client.connection_pool.get_connection()
            await conn.connect()
            transport = conn._writer.transport  # what _socket_readable reads
            assert transport.get_extra_info("socket") is not None
            assert not redis_py._socket_readable(conn)
            await client.connection_pool.release(conn)
        finally:
            await client.aclose()

    asyncio.run(writer_of_a_connection())
    if HIREDIS_AVAILABLE:
        from redis.connection import HiredisRespSerializer

        args = ("EVALSHA", "ab", 1, "k", b"\x00", 2.5)
        assert b"".join(HiredisRespSerializer().pack(*args)) == b"".join(
            redis.Connection().pack_command(*args)
        )


# --- Django -----------------------------------------------------------------------------------


def _result() -> Any:
    return TaskResult(
        task=tasks.add, id="x" * 32, status=TaskResultStatus.READY, enqueued_at=None,
        started_at=None, last_attempted_at=None, finished_at=None, args=[1, 2], kwargs={},
        backend="default", errors=[], worker_ids=[],
    )  # fmt: skip


def test_new_result_builds_what_the_constructor_builds() -> None:
    fields = {"task": tasks.add, "id": "x" * 32, "status": TaskResultStatus.READY,
              "enqueued_at": None, "started_at": None, "last_attempted_at": None,
              "finished_at": None, "args": [1, [2]], "kwargs": {"k": "v"}, "backend": "default",
              "errors": [], "worker_ids": ["w"]}  # fmt: skip
    built = django_shim.new_result(**fields)
    assert built == TaskResult(**fields)
    django_shim.update(built, status=TaskResultStatus.SUCCESSFUL)
    assert type(built) is TaskResult and built.return_value is None
    assert {f.name for f in dataclasses.fields(TaskResult)} == {*fields, "_return_value"}


def test_a_task_result_takes_its_return_value_and_updates_as_the_framework_does() -> None:
    fields = {f.name: f for f in dataclasses.fields(TaskResult)}
    assert "_return_value" in fields and not fields["_return_value"].init
    result = _result()
    django_shim.update(result, status=TaskResultStatus.SUCCESSFUL)
    django_shim.set_return_value(result, 3)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
    with pytest.raises(dataclasses.FrozenInstanceError):  # still frozen to everyone else
        result.status = TaskResultStatus.FAILED


def test_live_receivers_are_the_ones_a_send_calls() -> None:
    def receiver(**kwargs: Any) -> None: ...

    async def async_receiver(**kwargs: Any) -> None: ...

    task_finished.connect(receiver)
    task_finished.connect(async_receiver)
    try:
        found = django_shim.live_receivers(task_finished, object)
        assert found is not None
        sync_receivers, async_receivers = found
        assert receiver in sync_receivers and async_receiver in async_receivers
    finally:
        task_finished.disconnect(receiver)
        task_finished.disconnect(async_receiver)
    assert "_live_receivers" in dict(inspect.getmembers(type(task_finished)))


def test_the_fingerprint_of_connected_receivers_changes_with_them() -> None:
    def receiver(**kwargs: Any) -> None: ...

    before = django_shim.connected(task_finished)
    task_finished.connect(receiver)
    try:
        during = django_shim.connected(task_finished)
    finally:
        task_finished.disconnect(receiver)
    assert before is not None and during is not None and before != during
    assert django_shim.connected(task_finished) == before


def test_an_unvalidated_variant_keeps_every_field_but_the_changed_ones() -> None:
    variant = django_shim.unvalidated(tasks.add, priority=99, queue_name="gone")
    assert type(variant) is type(tasks.add)
    assert (variant.priority, variant.queue_name) == (99, "gone")
    unchanged = [f.name for f in dataclasses.fields(tasks.add)
                 if f.name not in ("priority", "queue_name")]  # fmt: skip
    assert all(getattr(variant, n) == getattr(tasks.add, n) for n in unchanged)


# --- Python -----------------------------------------------------------------------------------


def test_the_exit_hook_runs_while_thread_pools_still_take_work() -> None:
    """What the autostarted worker needs at exit: asyncio.to_thread still works then."""
    import threading

    assert callable(getattr(threading, "_register_atexit", None))
    program = (
        "import asyncio, concurrent.futures\n"
        "from redis_tasks.shims.python import at_exit_before_thread_pools\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1)\n"
        "pool.submit(lambda: None).result()\n"
        "late = lambda: print(pool.submit(lambda: 'still taking work').result())\n"
        "at_exit_before_thread_pools(late)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=30, env=child_env())  # fmt: skip
    assert done.stdout.strip() == "still taking work", done.stderr
