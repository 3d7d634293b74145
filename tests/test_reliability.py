"""Retries, timeouts, leases under load, hand-backs, server warnings and bad data, in-process."""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_tasks.compat import FRAMEWORK, TaskResultStatus, task, task_backends
from redis_tasks.exceptions import PayloadTooLarge
from redis_tasks.execution import Outcome, failed, retry_delay
from redis_tasks.keys import Keys
from redis_tasks.store import Claim
from redis_tasks.task import RedisTask
from tests import tasks
from tests.helpers import burst, wait_until


def refreshed(result: Any) -> Any:
    result.refresh()
    return result


def finished(result: Any, timeout: float = 15) -> Any:
    wait_until(lambda: refreshed(result).is_finished, timeout=timeout)
    return result


# --- retries --------------------------------------------------------------------------------


def test_retried_until_it_succeeds_keeping_every_error(background: Any) -> None:
    background()
    result = finished(tasks.flaky.enqueue(2))
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3  # context.attempt of the successful run
    assert result.attempts == 3 and len(result.worker_ids) == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.ConnectionError"] * 2
    assert "attempt 1 failed" in result.errors[0].traceback
    assert result.started_at < result.last_attempted_at < result.finished_at


def test_fails_after_max_attempts(background: Any) -> None:
    background()
    result = finished(tasks.flaky.enqueue(5))
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 3 and len(result.errors) == 3


def test_between_attempts_the_result_is_ready_with_its_errors(background: Any) -> None:
    background()
    result = tasks.fails_then_waits.enqueue()  # retries in about a minute
    wait_until(lambda: len(refreshed(result).errors) == 1)
    assert result.status == TaskResultStatus.READY
    assert result.attempts == 1
    deferred = Keys("task_queue").deferred("default")
    assert task_backends["default"].store.connections.sync.zscore(deferred, result.id)


def test_only_the_listed_exceptions_are_retried(background: Any) -> None:
    background()
    retried = finished(tasks.fails_with.enqueue("key"))
    not_retried = finished(tasks.fails_with.enqueue("value"))
    assert [retried.status, retried.attempts] == [TaskResultStatus.FAILED, 3]
    assert [not_retried.status, not_retried.attempts] == [TaskResultStatus.FAILED, 1]


def test_backend_wide_retry_defaults_apply_to_plain_tasks(background: Any) -> None:
    background("retrying")
    value = finished(tasks.fail.using(backend="retrying").enqueue("v"))
    assert value.attempts == 2 and len(value.errors) == 2  # retry_on ValueError, max_attempts 2
    exiting = finished(tasks.exit_task.using(backend="retrying").enqueue())
    assert exiting.attempts == 1  # SystemExit is not a ValueError


def test_a_task_retried_by_an_operator_is_retried_again_by_its_policy(background: Any) -> None:
    """A finished result keeps no queue score; the operator's retry gives it one, so the
    retry policy (a requeue) and lease recovery still work on the new attempts."""
    from redis_tasks.ops import Inspector

    backend = task_backends["retrying"]
    background("retrying")
    result = tasks.fail.using(backend="retrying").enqueue("v")
    assert finished(result).status == TaskResultStatus.FAILED
    Inspector(backend).retry(result.id)
    again = finished(result)
    # two more attempts: the first failure was requeued by the policy (max_attempts 2)
    assert [again.status, again.attempts, len(again.errors)] == [TaskResultStatus.FAILED, 4, 4]


def test_tasks_without_retry_options_are_not_retried() -> None:
    result = tasks.fail.enqueue()
    burst()
    assert refreshed(result).attempts == 1 and refreshed(result).status == TaskResultStatus.FAILED


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    backend = task_backends["default"]
    result: Any = type("R", (), {"task": tasks.flaky, "attempts": 0})()
    claim = Claim("x", "t", {})
    outcome = failed(ConnectionError())
    for attempt, base in ((1, 0.01), (2, 0.02)):
        result.attempts = attempt
        delays = [retry_delay(backend, claim, result, outcome) for _ in range(200)]
        assert all(d is not None and 0.5 * base <= d < 1.5 * base for d in delays)
        assert len(set(delays)) > 150  # jittered
    result.attempts = 3
    assert retry_delay(backend, claim, result, outcome) is None  # max_attempts reached
    assert retry_delay(backend, claim, result, Outcome(TaskResultStatus.SUCCESSFUL)) is None
    many = dataclasses.replace(tasks.flaky, max_attempts=50)
    capped: Any = type("R", (), {"task": many, "attempts": 30})()
    assert retry_delay(backend, claim, capped, outcome) <= backend.config.retry_backoff_max


def test_framework_decorator_forwards_options_where_it_can() -> None:
    import django

    probe = tasks.add.func
    if FRAMEWORK == "django.tasks" and django.VERSION < (6, 1):
        with pytest.raises(TypeError):  # Django 6.0's decorator takes no extra arguments
            task(max_attempts=5)(probe)
    else:
        made = task(max_attempts=5, timeout=2.5)(probe)
        assert isinstance(made, RedisTask) and (made.max_attempts, made.timeout) == (5, 2.5)


def test_invalid_task_options_are_refused_at_decoration() -> None:
    from redis_tasks.compat import InvalidTask
    from redis_tasks.task import task as redis_task

    for options in ({"max_attempts": 0}, {"timeout": -1}, {"retry_on": ["not.an.Exception"]}):
        with pytest.raises(InvalidTask):
            redis_task(**options)(tasks.add.func)


# --- timeouts -------------------------------------------------------------------------------


def test_async_task_is_cancelled_at_its_timeout(background: Any) -> None:
    background()
    result = finished(tasks.async_sleeps.enqueue(30))
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.TimeoutError"
    assert "timeout of 0.2s" in error.traceback


# With concurrency 1 a claim of one task takes all it asked for, so the outcome is stored from
# the loop; with more, the claim finds the queue dry, the task runs alone, and its thread
# stores it itself.
SETTLED_BY = pytest.mark.parametrize("concurrency", [1, 2], ids=["loop", "thread"])


@SETTLED_BY
def test_sync_task_past_its_timeout_fails_and_its_late_return_is_discarded(
    background: Any, tmp_path: Path, concurrency: int, caplog: Any
) -> None:
    worker = background(concurrency=concurrency)
    started, release = tmp_path / "started", tmp_path / "release"
    hung = tasks.sync_waits_for_file.enqueue(str(started), str(release))
    finished(hung)
    assert [e.exception_class_path for e in hung.errors] == ["builtins.TimeoutError"]
    assert worker.abandoned_threads == 1
    # Capacity is not lost: with concurrency 1 and the thread still hung, other tasks run.
    assert finished(tasks.add.enqueue(2, 3)).return_value == 5
    release.touch()
    wait_until(lambda: worker.abandoned_threads == 0)
    assert refreshed(hung).status == TaskResultStatus.FAILED and len(hung.errors) == 1
    assert "outcome discarded" not in caplog.text  # dropped unsent, not refused by Redis


def test_too_many_abandoned_threads_stop_the_worker_for_a_restart(
    background: Any, tmp_path: Path
) -> None:
    worker = background(concurrency=2, max_abandoned=0)
    result = finished(tasks.sync_waits_for_file.enqueue(str(tmp_path / "s"), str(tmp_path / "r")))
    assert result.status == TaskResultStatus.FAILED
    wait_until(lambda: worker.stopping)
    assert worker.exit_code == 3
    (tmp_path / "r").touch()
    wait_until(lambda: worker.abandoned_threads == 0)


# --- leases ---------------------------------------------------------------------------------


@pytest.fixture
def short_leases(settings: Any) -> None:
    settings.TASKS = {
        "default": {**settings.TASKS["default"], "lease_timeout": 0.5},
    }


@pytest.mark.usefixtures("short_leases")
@pytest.mark.parametrize("task_name", ["busy_cpu", "blocks_the_loop"])
def test_leases_are_renewed_while_cpu_or_the_loop_is_busy(background: Any, task_name: str) -> None:
    background(concurrency=2)
    result = finished(getattr(tasks, task_name).enqueue(1.5))  # three lease periods
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.attempts == 1 and result.errors == []


# --- graceful hand-back ---------------------------------------------------------------------


def test_tasks_still_running_after_the_grace_period_are_handed_back(
    background: Any, tmp_path: Path
) -> None:
    worker = background(grace=0.1)
    started, release = tmp_path / "started", tmp_path / "release"
    # It runs until the test releases it, so it is surely still running when the grace ends.
    result = tasks.async_wait_for_file.using(priority=3).enqueue(str(started), str(release))
    wait_until(started.exists)
    worker.request_stop()
    wait_until(lambda: refreshed(result).status != TaskResultStatus.RUNNING)
    assert result.status == TaskResultStatus.READY and result.errors == []
    stored = task_backends["default"].store.connections.sync.hgetall(
        Keys("task_queue").task(result.id)
    )
    assert stored[b"uncounted"] == b"1"
    release.touch()
    burst()
    assert refreshed(result).return_value == "released"
    assert result.attempts == 2 and result.errors == []


@SETTLED_BY
def test_a_sync_task_handed_back_at_shutdown_keeps_its_late_outcome_out(
    background: Any, tmp_path: Path, concurrency: int, caplog: Any
) -> None:
    worker = background(grace=0.1, concurrency=concurrency)
    started, release = tmp_path / "started", tmp_path / "release"
    result = tasks.wait_for_file.enqueue(str(started), str(release))
    wait_until(started.exists)
    worker.request_stop()
    wait_until(lambda: refreshed(result).status != TaskResultStatus.RUNNING)
    assert result.status == TaskResultStatus.READY
    release.touch()  # the body returns now, in a thread the worker gave up on
    wait_until(lambda: worker.abandoned_threads == 0)
    assert refreshed(result).status == TaskResultStatus.READY
    assert "outcome discarded" not in caplog.text
    burst()
    assert refreshed(result).return_value == "released" and result.attempts == 2


# --- Redis settings, payloads, garbage ------------------------------------------------------


def test_worker_warns_when_persistence_is_off(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="redis_tasks")
    burst()
    assert any("persistence is off" in r.getMessage() for r in caplog.records)
    assert not any("maxmemory-policy" in r.getMessage() for r in caplog.records)
    client = task_backends["default"].store.connections.sync
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        caplog.clear()
        burst()
        assert any("maxmemory-policy is 'allkeys-lru'" in r.getMessage() for r in caplog.records)
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_payloads_over_the_limit_are_rejected(settings: Any, clean_redis: redis.Redis) -> None:
    settings.TASKS = {"default": {**settings.TASKS["default"], "max_payload_bytes": 100}}
    tasks.echo.enqueue("x" * 50)
    with pytest.raises(PayloadTooLarge, match="over the backend's max_payload_bytes"):
        tasks.echo.enqueue("x" * 101)
    assert clean_redis.zcard(Keys("task_queue").ready("default")) == 1


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda c, k: c.set(k.ready("default"), "not a sorted set"),
        lambda c, k: c.set(k.running, "x"),
        lambda c, k: (c.delete(k.queues), c.lpush(k.queues, "x")),
        lambda c, k: c.hset(k.expiry, "a", "b"),
        lambda c, k: c.set(k.wake, "x"),
        lambda c, k: c.set(k.workers, "x"),
        lambda c, k: c.set(k.done("SUCCESSFUL"), "x"),
        lambda c, k: c.set(k.stats, "x"),
        lambda c, k: c.hset(k.sequence, "a", "b"),
        lambda c, k: c.set(k.sequence, "not a number"),
        lambda c, k: c.set(k.heads, "x"),
        lambda c, k: c.hset(k.due, "a", "b"),
    ],
)
def test_keys_of_the_wrong_type_are_moved_aside_and_work_goes_on(
    clean_redis: redis.Redis, corrupt: Any, caplog: Any
) -> None:
    k = Keys("task_queue")
    clean_redis.sadd(k.queues, "default")
    corrupt(clean_redis, k)
    result = tasks.add.using(queue_name="other").enqueue(1, 2)
    later = tasks.add.enqueue(3, 4)
    burst()
    assert refreshed(result).return_value == 3 and refreshed(later).return_value == 7
    assert clean_redis.keys("*:corrupt:*"), "the bad key was not kept for an operator"


def test_non_utf8_and_pickled_payloads_fail_without_running(clean_redis: redis.Redis) -> None:
    import pickle

    k = Keys("task_queue")
    clean_redis.sadd(k.queues, "default")
    bad = {"path": b"\xff\xfe", "pickle": pickle.dumps(print)}
    for i, (name, value) in enumerate(bad.items()):
        clean_redis.hset(k.task(name), mapping={
            "path": value if name == "path" else "tests.tasks.add", "queue": "default",
            "priority": "0", "score": str(i), "args": value, "kwargs": "{}", "backend": "default",
            "status": "READY"})  # fmt: skip
        clean_redis.zadd(k.ready("default"), {name: i})
    burst()
    for name in bad:
        stored = clean_redis.hgetall(k.task(name))
        assert stored[b"status"] == b"FAILED"
        assert b"InvalidTaskPayload" in stored[b"errors"]


def test_random_garbage_never_stops_the_worker(clean_redis: redis.Redis) -> None:
    rng = random.Random(7)
    k = Keys("task_queue")
    clean_redis.sadd(k.queues, "default")
    good = tasks.add.using(priority=-100).enqueue(20, 22)
    for i in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        field = rng.choice(["path", "args", "kwargs", "priority", "workers", "errors", "score"])
        clean_redis.hset(k.task(f"g{i}"), mapping={"path": "tests.tasks.add", "queue": "default",
                         "priority": "0", "score": "0", "args": "[1,1]", "kwargs": "{}",
                         "backend": "default", "status": "READY", field: blob})  # fmt: skip
        clean_redis.zadd(k.ready("default"), {f"g{i}": i, blob: 1000 + i})
    burst()
    assert refreshed(good).return_value == 42
    assert clean_redis.zcard(k.ready("default")) == 0
    assert clean_redis.zcard(k.running) == 0


def test_every_key_left_behind_has_a_ttl_or_an_owner(
    clean_redis: redis.Redis, background: Any
) -> None:
    k = Keys("task_queue")
    clean_redis.zadd(k.ready("ghosts"), {"ghost": 0})  # dead-lettered
    clean_redis.sadd(k.queues, "ghosts")
    clean_redis.set(k.running, "garbage")  # moved aside
    done = [
        tasks.add.enqueue(1, 1),
        tasks.fail.enqueue(),
        tasks.flaky.using(queue_name="q").enqueue(1),
    ]
    background()
    for result in done:
        finished(result)
    # A counter, and sets the claim script sweeps (the queue index empties with the queues).
    structural = {k.sequence, k.stats, k.dead, k.done("SUCCESSFUL"), k.done("FAILED"), k.workers}
    for key in clean_redis.keys("*"):
        name = key.decode()
        assert name in structural or clean_redis.pttl(key) > 0, name
    assert not clean_redis.exists(k.heads, k.due)
    assert clean_redis.zscore(k.dead, "ghost") is not None
    assert clean_redis.smembers(k.queues) == set()  # queues left empty are forgotten


# --- regressions found in review ------------------------------------------------------------


def _lose_lease(client: redis.Redis, task_id: str) -> None:
    """Make a claimed task's lease run out now, as if its worker had died."""
    client.zadd(Keys("task_queue").running, {task_id: 0})


def test_a_tasks_own_max_attempts_bounds_lost_workers(clean_redis: redis.Redis) -> None:
    import asyncio

    result = tasks.single_attempt.enqueue()
    batch = asyncio.run(task_backends["default"].store.claim("dead-worker", 1))
    assert [c.task_id for c in batch.claims] == [result.id]
    _lose_lease(clean_redis, result.id)
    assert burst().tasks_done == 0  # the claim's sweep fails it: one attempt was all it had
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == "redis_tasks.exceptions.WorkerLost"


def test_max_tasks_lets_running_tasks_finish_without_a_deadline(background: Any) -> None:
    worker = background(concurrency=2, max_tasks=1, grace=0.05)
    result = finished(tasks.sleeps.enqueue(0.5))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1
    wait_until(lambda: worker.stopping)


@SETTLED_BY
def test_a_sync_timeout_covers_only_the_task_body(background: Any, concurrency: int) -> None:
    import time

    from redis_tasks.compat import task_finished

    def slow_receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        time.sleep(1.5)  # longer than the task's 1 s timeout

    task_finished.connect(slow_receiver)
    try:
        worker = background(concurrency=concurrency)
        result = finished(tasks.quick_with_timeout.enqueue())
    finally:
        task_finished.disconnect(slow_receiver)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "quick"
    assert worker.abandoned_threads == 0


@pytest.mark.parametrize("task_name", ["add", "async_add"])
def test_a_failing_task_started_receiver_fails_the_task(task_name: str) -> None:
    from redis_tasks.compat import task_started

    def broken(sender: Any, task_result: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    task_started.connect(broken)
    try:
        result = getattr(tasks, task_name).enqueue(1, 2)
        burst()
    finally:
        task_started.disconnect(broken)
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == "builtins.RuntimeError"
