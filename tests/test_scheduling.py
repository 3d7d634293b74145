"""Periodic tasks: ticks in TIME_ZONE with DST, exactly once across racing workers, missed ticks."""

from __future__ import annotations

import itertools
import json
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from django.core.management import call_command

from redis_tasks.backend import RedisBackend
from redis_tasks.keys import Keys
from redis_tasks.schedules import Schedule, code_schedules, periodic
from redis_tasks.ticker import Ticker, redis_now
from tests import tasks
from tests.helpers import manage, wait_until


def backend(**schedules: Any) -> RedisBackend:
    from django.conf import settings

    return RedisBackend("sched", {"BACKEND": "x", "LOCATION": f"{settings.REDIS_URL}/12",
                                  "schedules": schedules})  # fmt: skip


def tick_tasks(client: redis.Redis, namespace: str = "sched") -> list[dict[bytes, bytes]]:
    keys = client.keys(Keys(namespace).task("*"))
    return [client.hgetall(k) for k in keys]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --- ticks ----------------------------------------------------------------------------------


def test_interval_ticks_are_aligned_to_the_epoch() -> None:
    s = Schedule(name="s", task="t", every=300)
    now = utc(2026, 11, 25, 10, 7, 30)
    assert s.latest_tick(now) == utc(2026, 11, 25, 10, 5)
    assert s.next_tick(now) == utc(2026, 11, 25, 10, 10)
    assert s.latest_tick(utc(2026, 11, 25, 10, 5)) == utc(2026, 11, 25, 10, 5)


def test_cron_ticks_follow_TIME_ZONE_across_dst(settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    daily = Schedule(name="d", task="t", cron="30 2 * * *")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and runs at 03:00 CEST.
    assert daily.next_tick(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)
    # Then back at 02:30 CEST (00:30 UTC) on the next day.
    assert daily.next_tick(utc(2026, 3, 29, 2)) == utc(2026, 3, 30, 0, 30)
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and runs once.
    first = daily.next_tick(utc(2026, 10, 24, 12))
    assert daily.next_tick(first) == utc(2026, 10, 26, 1, 30)
    assert daily.latest_tick(utc(2026, 11, 25, 12)) == utc(2026, 11, 25, 1, 30)  # 02:30 CET


def test_no_busy_loop_in_the_repeated_dst_hour(settings: Any) -> None:
    from redis_tasks.ticker import seconds_to_next_tick

    settings.TIME_ZONE = "Europe/Berlin"
    daily = Schedule(name="d", task="t", cron="30 2 * * *")
    # 2026-10-25 01:10 UTC is 02:10 CET, inside the hour that happens twice.
    assert seconds_to_next_tick(daily, utc(2026, 10, 25, 1, 10)) >= 1.0
    assert seconds_to_next_tick(daily, utc(2026, 10, 25, 12)) > 3600


# --- one pass of the scheduler --------------------------------------------------------------


def test_a_new_schedule_waits_for_its_next_tick(clean_redis: redis.Redis) -> None:
    b = backend(s={"task": "tests.tasks.add", "every": 3600, "args": [1, 2]})
    Ticker(b).run_once()
    assert tick_tasks(clean_redis) == []
    assert b.store.schedule_state(["s"])["s"] is not None


@pytest.mark.parametrize(("missed", "expected"), [("once", 1), ("skip", 0)])
def test_a_missed_tick_runs_at_most_once(
    clean_redis: redis.Redis, missed: str, expected: int
) -> None:
    b = backend(yearly={"task": "tests.tasks.add", "cron": "0 0 1 1 *", "args": [1, 2],
                        "missed": missed})  # fmt: skip
    clean_redis.hset(Keys("sched").schedule("yearly"), "last", 0)  # down since 1970
    for _ in range(3):
        Ticker(b).run_once()
    assert len(tick_tasks(clean_redis)) == expected
    last = b.store.schedule_state(["yearly"])["yearly"]
    assert last == int(b.schedules()["yearly"].latest_tick(redis_now(b)).timestamp() * 1000)


def test_racing_schedulers_enqueue_a_tick_once(clean_redis: redis.Redis) -> None:
    b = backend(s={"task": "tests.tasks.add", "every": 3600, "args": [1, 2]})
    clean_redis.hset(Keys("sched").schedule("s"), "last", 0)
    start = threading.Barrier(8)

    def race() -> None:
        scheduler = Ticker(b)
        start.wait()
        scheduler.run_once()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [task] = tick_tasks(clean_redis)
    assert task[b"path"] == b"tests.tasks.add" and task[b"args"] == b"[1,2]"


def test_schedule_options_reach_the_task(clean_redis: redis.Redis) -> None:
    b = backend(s={"task": "tests.tasks.echo", "every": 3600, "args": [1], "kwargs": {"k": "v"},
                   "priority": 7, "queue_name": "reports"})  # fmt: skip
    clean_redis.hset(Keys("sched").schedule("s"), "last", 0)
    Ticker(b).run_once()
    [task] = tick_tasks(clean_redis)
    assert (task[b"priority"], task[b"queue"], task[b"kwargs"]) == (b"7", b"reports", b'{"k":"v"}')
    assert b"tick" in task


def test_a_tick_the_backend_refuses_is_reported_and_not_enqueued(
    clean_redis: redis.Redis, caplog: Any
) -> None:
    """A schedule's task is validated as any enqueue is (here: a queue outside QUEUES)."""
    from django.conf import settings

    schedule = {"task": "tests.tasks.add", "every": 3600, "queue_name": "elsewhere"}
    b = RedisBackend("sched", {"BACKEND": "x", "LOCATION": f"{settings.REDIS_URL}/12",
                               "QUEUES": ["default"], "schedules": {"s": schedule}})  # fmt: skip
    clean_redis.hset(Keys("sched").schedule("s"), "last", 0)
    Ticker(b).run_once()
    assert tick_tasks(clean_redis) == []
    assert any("cannot enqueue" in r.getMessage() for r in caplog.records)


def test_worker_processes_racing_enqueue_every_tick_exactly_once(
    clean_redis: redis.Redis, tmp_path: Any
) -> None:
    procs = [
        manage("redis_tasks_worker", "--backend", "scheduled", stdout=open(tmp_path / f"{i}", "w"))  # noqa: SIM115
        for i in range(3)
    ]
    try:
        wait_until(lambda: len(tick_tasks(clean_redis, "scheduled")) >= 3, timeout=30)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(30) == 0
    found = tick_tasks(clean_redis, "scheduled")
    ticks = sorted(int(t[b"tick"]) for t in found)
    assert len(ticks) == len(set(ticks)), f"a tick was enqueued twice: {ticks}"
    # On the 1 s grid. (A pass delayed past a whole tick under load collapses the missed tick
    # into the next one, by design, so the gaps are multiples of a second, not always one.)
    assert all((b - a) % 1000 == 0 and b > a for a, b in itertools.pairwise(ticks)), ticks
    assert all(t[b"status"] == b"SUCCESSFUL" for t in found if int(t[b"tick"]) < ticks[-1])


# --- declaring and listing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"task": "tests.tasks.add", "cron": "61 * * * *"}, "invalid cron expression"),
        ({"task": "tests.tasks.add"}, "exactly one of 'cron' and 'every'"),
        ({"task": "tests.tasks.add", "cron": "* * * * *", "every": 5}, "exactly one"),
        ({"task": "tests.tasks.add", "every": 0}, "positive number"),
        ({"task": "tests.tasks.add", "every": 5, "missed": "twice"}, "'missed'"),
        ({"task": "tests.tasks.add", "every": 5, "args": "1"}, "'args'"),
        ({"cron": "* * * * *"}, "needs 'task'"),
        ({"task": "tests.tasks.add", "every": 5, "when": 1}, "unknown keys"),
    ],
)
def test_invalid_schedules_are_E006(spec: dict[str, Any], problem: str) -> None:
    [error] = backend(s=spec).check()
    assert error.id == "redis_tasks.E006" and problem in error.msg


@pytest.mark.parametrize("path", ["tests.tasks.not_a_task", "tests.tasks.nothing_here"])
def test_schedules_of_unknown_tasks_are_E007(path: str) -> None:
    [error] = backend(s={"task": path, "every": 5}).check()
    assert error.id == "redis_tasks.E007"


def test_periodic_declares_a_schedule_in_code() -> None:
    schedule = periodic(tasks.add, cron="*/5 * * * *", name="code-declared", args=[2, 2])
    try:
        assert code_schedules("default")["code-declared"] == schedule
        with pytest.raises(ValueError, match="invalid cron"):
            periodic(tasks.add, cron="nope")
    finally:
        from redis_tasks import schedules

        schedules.unregister("default", "code-declared")


def test_schedules_command_lists_last_and_next_runs(capsys: Any, clean_redis: redis.Redis) -> None:
    call_command("redis_tasks_schedules", "--json")
    [row] = json.loads(capsys.readouterr().out)
    assert (row["backend"], row["name"], row["task"]) == (
        "scheduled",
        "every-second",
        "tests.tasks.add",
    )
    assert row["last_run"] is None and row["schedule"] == "every 1s"
    clean_redis.hset(
        Keys("scheduled").schedule("every-second"), "last_enqueued_at", 1_700_000_000_000
    )
    call_command("redis_tasks_schedules")
    out = capsys.readouterr().out
    assert "every-second" in out and "2023-11-14" in out and "NEXT RUN" in out
