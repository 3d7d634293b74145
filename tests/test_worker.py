"""The worker, in-process: ordering, deferral, concurrency, failures, signals and safety."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import django
import pytest
import redis
from django.utils import timezone

from redis_tasks import worker as worker_module
from redis_tasks.compat import TaskResultStatus, task_backends, task_finished, task_started
from redis_tasks.keys import Keys
from redis_tasks.sender import AsyncSender
from tests import tasks
from tests.helpers import burst, wait_until


def lines(path: Path) -> list[str]:
    return path.read_text().split()


def test_priorities_across_queues_then_fifo(tmp_path: Path) -> None:
    log = tmp_path / "order"
    plan = [
        ("a", 0, "q1"),
        ("b", 5, "q2"),
        ("c", -3, "q1"),
        ("d", 5, "q1"),
        ("e", 100, "q3"),
        ("f", 0, "q2"),
        ("g", -100, "q3"),
        ("h", 5, "q3"),
    ]
    for label, priority, queue in plan:
        tasks.record.using(priority=priority, queue_name=queue).enqueue(str(log), label)
    burst(concurrency=1)
    assert lines(log) == ["e", "b", "d", "h", "a", "f", "c", "g"]


def test_worker_serves_only_the_given_queues(tmp_path: Path) -> None:
    log = tmp_path / "order"
    for queue in ("q1", "q2", "q3"):
        tasks.record.using(queue_name=queue).enqueue(str(log), queue)
    burst(queues=["q1", "q3"])
    assert sorted(lines(log)) == ["q1", "q3"]


def test_worker_serves_only_the_given_backends() -> None:
    mine = tasks.add.enqueue(1, 1)
    theirs = tasks.add.using(backend="other").enqueue(1, 1)
    burst("other")
    mine.refresh()
    theirs.refresh()
    assert mine.status == TaskResultStatus.READY and theirs.status == TaskResultStatus.SUCCESSFUL


def test_burst_leaves_deferred_tasks_queued(clean_redis: redis.Redis) -> None:
    later = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    now = tasks.add.enqueue(2, 2)
    assert burst().tasks_done == 1
    later.refresh()
    now.refresh()
    assert later.status == TaskResultStatus.READY and now.return_value == 4
    assert clean_redis.zscore(Keys("task_queue").deferred("default"), later.id) is not None


def test_due_run_after_runs_in_burst() -> None:
    result = tasks.add.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue(1, 1)
    burst()
    result.refresh()
    assert result.return_value == 2
    assert result.task.run_after is not None


def test_max_tasks_stops_the_worker() -> None:
    results = [tasks.add.enqueue(i, i) for i in range(5)]
    worker = burst(max_tasks=3, concurrency=2)
    assert worker.tasks_done == 3
    statuses = []
    for r in results:
        r.refresh()
        statuses.append(r.status)
    assert statuses.count(TaskResultStatus.SUCCESSFUL) == 3
    assert statuses.count(TaskResultStatus.READY) == 2


def test_sync_tasks_run_concurrently_in_threads() -> None:
    name = uuid.uuid4().hex
    results = [tasks.sync_rendezvous.enqueue(name, 4) for _ in range(4)]
    burst(concurrency=4)
    for r in results:
        r.refresh()
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 4, results[0].errors
    assert len({r.return_value for r in results}) == 4  # four different threads


def test_async_tasks_run_concurrently_on_the_loop() -> None:
    name = uuid.uuid4().hex
    results = [tasks.async_rendezvous.enqueue(name, 5) for _ in range(5)]
    burst(concurrency=5)
    for r in results:
        r.refresh()
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 5, results[0].errors


def test_sync_and_async_tasks_run_side_by_side() -> None:
    sync_name, async_name = uuid.uuid4().hex, uuid.uuid4().hex
    results = [tasks.sync_rendezvous.enqueue(sync_name, 2) for _ in range(2)]
    results += [tasks.async_rendezvous.enqueue(async_name, 2) for _ in range(2)]
    burst(concurrency=4)
    for r in results:
        r.refresh()
        assert r.status == TaskResultStatus.SUCCESSFUL, r.errors


@pytest.mark.parametrize(
    ("task", "error_class"),
    [
        (tasks.fail, "builtins.ValueError"),
        (tasks.exit_task, "builtins.SystemExit"),
        (tasks.unserializable_return, "builtins.TypeError"),  # the framework's own error
    ],
)
def test_failures_are_recorded_and_the_worker_goes_on(task: Any, error_class: str) -> None:
    failing = task.enqueue()
    after = tasks.add.using(priority=-1).enqueue(1, 2)
    burst(concurrency=1)
    failing.refresh()
    after.refresh()
    assert failing.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in failing.errors] == [error_class]
    assert after.return_value == 3


def test_context_is_passed_to_tasks_that_take_it() -> None:
    result = tasks.with_context.enqueue(7)
    burst()
    result.refresh()
    assert result.return_value == {"id": result.id, "attempt": 1, "value": 7}


def test_started_and_finished_signals_are_sent_by_the_worker() -> None:
    events: list[tuple[str, str, str]] = []

    def on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        events.append(("started", task_result.task.name, task_result.status))

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        events.append(("finished", task_result.task.name, task_result.status))

    task_started.connect(on_started)
    task_finished.connect(on_finished)
    try:
        tasks.add.enqueue(1, 1)
        burst()
        tasks.async_add.enqueue(1, 1)
        burst()
    finally:
        task_started.disconnect(on_started)
        task_finished.disconnect(on_finished)
    assert events == [
        ("started", "add", "RUNNING"),
        ("finished", "add", "SUCCESSFUL"),
        ("started", "async_add", "RUNNING"),
        ("finished", "async_add", "SUCCESSFUL"),
    ]


def _plant(clean_redis: redis.Redis, **fields: Any) -> str:
    """Write a task straight into Redis, as an attacker or a bug could."""
    k = Keys("task_queue")
    task_id = uuid.uuid4().hex
    base = {
        "path": "tests.tasks.add",
        "queue": "default",
        "priority": "0",
        "score": "1",
        "args": "[1, 2]",
        "kwargs": "{}",
        "backend": "default",
        "status": "READY",
        "enqueued_at": "1",
    }
    base.update(fields)
    clean_redis.hset(k.task(task_id), mapping={a: b for a, b in base.items() if b is not None})
    clean_redis.zadd(k.ready("default"), {task_id: 1})
    clean_redis.sadd(k.queues, "default")
    return task_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": "os.system", "args": '["touch /tmp/redis-tasks-pwned"]'}, "is not a task"),
        ({"path": "tests.tasks.not_a_task"}, "is not a task"),
        ({"path": "no.such.module"}, "cannot be imported"),
        ({"path": None}, "no 'path' field"),
        ({"args": "not json"}, "malformed"),
        ({"args": "{}"}, "must be a JSON array"),
        ({"priority": "high"}, "malformed"),
    ],
)
def test_stored_entries_that_are_not_tasks_fail_and_run_nothing(
    clean_redis: redis.Redis, fields: dict[str, Any], message: str
) -> None:
    bad = _plant(clean_redis, **fields)
    good = tasks.add.using(priority=-5).enqueue(2, 2)
    burst()
    stored = clean_redis.hgetall(Keys("task_queue").task(bad))
    assert stored[b"status"] == b"FAILED"
    assert b"redis_tasks.exceptions.InvalidTaskPayload" in stored[b"errors"]
    assert message.encode() in stored[b"errors"]
    assert not Path("/tmp/redis-tasks-pwned").exists()
    good.refresh()
    assert good.return_value == 4


def test_ids_without_payload_are_moved_to_the_dead_letter_set(clean_redis: redis.Redis) -> None:
    k = Keys("task_queue")
    clean_redis.zadd(k.ready("default"), {"ghost": 0})
    clean_redis.sadd(k.queues, "default")
    good = tasks.add.enqueue(1, 1)
    burst()
    assert clean_redis.zscore(k.dead, "ghost") is not None
    good.refresh()
    assert good.return_value == 2


def test_an_idle_worker_is_woken_by_enqueue(background: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(worker_module, "IDLE_WAIT_MAX", 60.0)  # only a wake-up can start the task
    background()
    wait_until(lambda: _blocked_clients() >= 1)
    result = tasks.add.enqueue(20, 22)
    wait_until(lambda: _refreshed(result).status == TaskResultStatus.SUCCESSFUL, timeout=5)


def test_every_outcome_is_settled_from_the_loop_in_shared_trips(
    background: Any, monkeypatch: Any
) -> None:
    """One path for every task: its outcome is stored from the event loop, where the finishes
    of tasks that end together share one script run, whether it ran alone or in a backlog."""
    from redis_tasks.calls import Call

    runs: list[int] = []
    send = AsyncSender.pipeline

    async def pipeline(self: Any, calls: Any, after: Any = ()) -> list[Any]:
        runs.extend(
            int(c.args[2]) for c in calls if isinstance(c, Call) and c.script.name == "finish"
        )
        return await send(self, calls, after)

    monkeypatch.setattr(AsyncSender, "pipeline", pipeline)
    results = [tasks.add.enqueue(i, 1) for i in range(25)]
    burst(concurrency=5)
    assert all(_refreshed(r).return_value == i + 1 for i, r in enumerate(results))
    assert sum(runs) == 25 and len(runs) < 25  # every finish from the loop, some together
    runs.clear()
    background()  # an idle worker, a lone task
    wait_until(lambda: _blocked_clients() >= 1)
    alone = tasks.add.enqueue(20, 22)
    wait_until(lambda: _refreshed(alone).status == TaskResultStatus.SUCCESSFUL, timeout=5)
    assert runs == [1]


def test_an_idle_worker_starts_a_deferred_task_within_a_second(
    background: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(worker_module, "IDLE_WAIT_MAX", 60.0)
    background()
    run_after = timezone.now() + timedelta(milliseconds=400)
    result = tasks.add.using(run_after=run_after).enqueue(1, 1)
    wait_until(lambda: _refreshed(result).is_finished, timeout=5)
    assert result.started_at is not None
    assert run_after <= result.started_at < run_after + timedelta(seconds=1)


def test_a_claim_that_empties_the_queues_still_waits_only_until_the_next_due_task(
    background: Any, monkeypatch: Any, clean_redis: redis.Redis
) -> None:
    """A claim that takes fewer tasks than asked leaves the worker waiting for work; it must
    still wake at the next deferred task's due time, not at the idle wait's end."""
    monkeypatch.setattr(worker_module, "IDLE_WAIT_MAX", 60.0)
    run_after = timezone.now() + timedelta(milliseconds=500)
    deferred = tasks.add.using(run_after=run_after).enqueue(1, 1)
    ready = tasks.add.enqueue(2, 2)
    clean_redis.delete(Keys("task_queue").wake)  # no token to wake the worker by luck
    background()  # its first claim takes the ready task only
    wait_until(lambda: _refreshed(deferred).is_finished, timeout=10)
    assert _refreshed(ready).is_finished
    assert deferred.started_at is not None
    assert run_after <= deferred.started_at < run_after + timedelta(seconds=2)


def test_an_idle_worker_blocks_instead_of_polling(
    background: Any, clean_redis: redis.Redis
) -> None:
    background()
    wait_until(lambda: _blocked_clients() >= 1)
    before = _calls(clean_redis)
    _wait_on_redis_clock(clean_redis, 2.0)
    made = _calls(clean_redis) - before
    assert made <= 12, f"{made} commands in 2s of idling"  # ~1 claim + 1 BLPOP a second


def _wait_on_redis_clock(client: redis.Redis, seconds: float) -> None:
    t0 = client.time()
    start = t0[0] + t0[1] / 1e6
    wait_until(lambda: (lambda t: t[0] + t[1] / 1e6)(client.time()) - start >= seconds, every=0.25)


def _calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        v["calls"]
        for k, v in stats.items()
        if k in ("cmdstat_evalsha", "cmdstat_blpop", "cmdstat_eval")
    )


def _blocked_clients() -> int:
    return int(task_backends["default"].store.connections.sync.info("clients")["blocked_clients"])


def _refreshed(result: Any) -> Any:
    result.refresh()
    return result


@pytest.mark.django_db(transaction=True)
def test_database_connections_are_closed_around_sync_tasks() -> None:
    opened = tasks.open_db_connection.using(priority=1).enqueue()
    after = tasks.db_connection_is_closed.enqueue()
    burst(concurrency=1)  # one thread: the second task sees what the first left behind
    assert _refreshed(opened).return_value is True
    assert _refreshed(after).return_value is True


def test_a_due_deferred_task_jumps_the_backlog_of_its_priority(
    clean_redis: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "order"
    deferred = tasks.record.using(run_after=timezone.now() + timedelta(milliseconds=50))
    deferred.enqueue(str(log), "deferred")
    for i in range(5):
        tasks.record.enqueue(str(log), f"backlog{i}")
    tasks.record.using(priority=1).enqueue(str(log), "higher")
    client = task_backends["default"].store.connections.sync
    due = Keys("task_queue").deferred("default")
    wait_until(lambda: client.time()[0] * 1000 + client.time()[1] // 1000
               > int(client.zrange(due, 0, 0, withscores=True)[0][1]))  # fmt: skip
    burst(concurrency=1)
    assert lines(log) == ["higher", "deferred"] + [f"backlog{i}" for i in range(5)]


@pytest.mark.django_db(transaction=True)
def test_a_project_receiver_may_use_the_database_for_sync_and_async_tasks() -> None:
    """Receivers of the project's own never run on the worker's event loop (where Django
    forbids database queries); the framework's logger and our metrics may, to save a thread
    hop per task."""
    from django.contrib.auth.models import User

    seen: list[tuple[str, str, int]] = []

    def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((task_result.task.name, task_result.status, User.objects.count()))

    task_started.connect(on_finished)
    task_finished.connect(on_finished)
    try:
        tasks.add.enqueue(1, 1)
        tasks.async_add.enqueue(1, 1)
        burst(concurrency=2)
    finally:
        task_started.disconnect(on_finished)
        task_finished.disconnect(on_finished)
    assert sorted(seen) == [
        ("add", "RUNNING", 0),
        ("add", "SUCCESSFUL", 0),
        ("async_add", "RUNNING", 0),
        ("async_add", "SUCCESSFUL", 0),
    ]


def test_loop_safety_is_decided_by_the_receivers_connected() -> None:
    from redis_tasks import signalling
    from redis_tasks.backend import RedisBackend

    assert signalling.loop_safe(task_finished, RedisBackend)

    def project_receiver(**kwargs: Any) -> None: ...

    task_finished.connect(project_receiver)
    try:
        assert not signalling.loop_safe(task_finished, RedisBackend)
    finally:
        task_finished.disconnect(project_receiver)
    assert signalling.loop_safe(task_finished, RedisBackend)


def test_a_task_finished_during_a_renewal_is_not_reported_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The heartbeat renews a copy of the leases; a task that finishes meanwhile is missing
    from Redis' side, and was not lost."""
    from django.conf import settings

    from redis_tasks.backend import RedisBackend
    from redis_tasks.worker import Worker

    options = {**settings.TASKS["default"], "lease_timeout": 0.15, "maxsize": None}
    backend = RedisBackend("default", options)
    backend.enqueue_many(tasks.async_add, [((1, 1), {})] * 3000)
    worker = Worker([backend], burst=True, concurrency=50)
    with caplog.at_level("WARNING", logger="redis_tasks"):
        asyncio.run(worker.run())
    assert worker.tasks_done == 3000
    assert not [r for r in caplog.records if "lost the lease" in r.getMessage()]


def test_the_readmes_quiet_task_log_keeps_failures_and_drops_the_per_task_lines() -> None:
    """README, "Run a worker": LOGGING that raises the framework's logger to WARNING
    (``django.tasks``; the backport's is ``django_tasks``)."""
    import logging
    import logging.config

    name = "django.tasks" if django.VERSION >= (6,) else "django_tasks"
    framework_log = logging.getLogger(name)
    level, seen = framework_log.level, []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.levelname)

    handler = Keep()
    try:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {name: {"level": "WARNING"}},
        })  # fmt: skip
        framework_log.addHandler(handler)  # after: dictConfig replaces the logger's handlers
        tasks.add.enqueue(1, 2)
        tasks.fail.enqueue()
        burst()
    finally:
        framework_log.removeHandler(handler)
        framework_log.setLevel(level)
    assert seen == ["ERROR"]  # the failure, not the two starts and the success
