"""Flow control across every worker (redis_tasks.limits, lua/lib/limits.lua): rate limits and
concurrency limits per task, per argument value and per queue, enforced in the claim; pausing a
queue; cancelling running tasks. Several real worker processes where it matters."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import InvalidTask, TaskResultStatus, task_backends
from redis_tasks.keys import Keys
from redis_tasks.ops import Inspector
from tests import tasks
from tests.helpers import burst, child_env, manage, stop_processes, wait_until


def stamps(path: Path) -> list[tuple[str, float, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(label, float(at), int(pid)) for label, at, pid in rows if len(rows[0]) == 3]


def intervals(path: Path, end_of_killed: float | None = None) -> list[tuple[float, float, str]]:
    """(start, end, key) of each run; a run without an end (its worker was killed) ends at
    ``end_of_killed``."""
    starts: dict[str, float] = {}
    runs = []
    for label, at, _ in stamps(path):
        kind, key = label.split("-", 1)
        if kind == "start":
            starts[key] = at
        elif key in starts:
            runs.append((starts.pop(key), at, key))
    runs += [(at, end_of_killed or at, key) for key, at in starts.items()]
    return runs


def most_at_once(runs: list[tuple[float, float, str]]) -> int:
    events = sorted([(s, 1) for s, _, _ in runs] + [(e, -1) for _, e, _ in runs])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.fixture
def workers(tmp_path: Path) -> Any:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, lease: str = "30") -> subprocess.Popen[str]:
        log = open(tmp_path / f"worker-{len(procs)}.log", "w")  # noqa: SIM115
        env = child_env(REDIS_TASKS_TEST_LEASE=lease)
        proc = manage("redis_tasks_worker", *args, env=env, stdout=log, stderr=log)
        procs.append(proc)
        return proc

    yield start
    stop_processes(procs)


def finished(results: list[Any], timeout: float = 60) -> None:
    def all_done() -> bool:
        for r in results:
            r.refresh()
        return all(r.is_finished for r in results)

    wait_until(all_done, timeout=timeout, every=0.1)


# --- rate limits ------------------------------------------------------------------------------


def test_a_rate_limit_holds_across_three_workers(tmp_path: Path, workers: Any) -> None:
    journal = tmp_path / "journal"
    results = [tasks.rate_limited.enqueue(str(journal), n) for n in range(14)]
    for _ in range(3):
        workers("--concurrency", "4")
    finished(results)
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    starts = sorted(r.started_at.timestamp() for r in results)  # the Redis clock, at each claim
    # At most 4 starts in any second (a sliding window: no burst beyond the limit).
    assert max(sum(1 for t in starts if s <= t < s + 1) for s in starts) <= 4
    assert starts[-1] - starts[0] >= 2.9  # 14 starts at 4 a second span at least 3 seconds
    assert len({r.worker_ids[0] for r in results}) > 1  # the workers shared the work


def test_tasks_a_limit_holds_back_let_the_others_of_their_queue_pass() -> None:
    throttled = [tasks.once_a_minute.enqueue(n) for n in range(5)]
    free = [tasks.add.enqueue(n, 1) for n in range(30)]
    started = time.monotonic()
    burst()
    assert time.monotonic() - started < 10  # no waiting behind the throttled ones
    for r in [*throttled, *free]:
        r.refresh()
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in free)
    assert [r.status for r in throttled].count(TaskResultStatus.SUCCESSFUL) == 1
    assert [r.status for r in throttled].count(TaskResultStatus.READY) == 4  # held, in order
    overview = Inspector(task_backends["default"]).overview()
    assert overview["held"] == {"default": 4}


def test_an_idle_worker_waits_for_the_window_instead_of_spinning(background: Any) -> None:
    backend = task_backends["limited"]
    results = [tasks.add.using(backend="limited", queue_name="metered").enqueue(n, 0)
               for n in range(7)]  # fmt: skip
    stats = Keys(backend.config.namespace).stats
    client = backend.store.connections.sync
    client.config_resetstat()  # counted from here
    background("limited")
    finished(results, timeout=20)
    started = sorted(r.started_at.timestamp() for r in results)
    assert max(sum(1 for t in started if s <= t < s + 1) for s in started) <= 3
    claims = int(client.hget(stats, "started") or 0)
    assert claims == 7
    # Waiting for each window to open, not claiming in a loop: few claim script runs.
    commands = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert commands < 200, commands


# --- concurrency limits -----------------------------------------------------------------------


def test_a_concurrency_limit_holds_across_three_workers_and_a_killed_one(
    tmp_path: Path, workers: Any
) -> None:
    journal = tmp_path / "journal"
    results = [tasks.two_at_once.enqueue(str(journal), n, 0.4) for n in range(12)]
    procs = [workers("--concurrency", "4", lease="1") for _ in range(3)]
    wait_until(lambda: len(stamps(journal)) >= 1)
    victim_pid = stamps(journal)[0][2]
    victim = next(p for p in procs if p.pid == victim_pid)
    victim.send_signal(signal.SIGKILL)  # holding a slot: it comes back with the lease
    killed_at = time.time()
    finished(results, timeout=60)
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results), [
        r.errors for r in results
    ]
    runs = intervals(journal, end_of_killed=killed_at)
    assert most_at_once(runs) <= 2
    assert most_at_once(runs) == 2  # the limit, not less: two ran side by side
    k = Keys("task_queue")
    assert not task_backends["default"].store.connections.sync.smembers(
        k.cslots("t:tests.tasks.two_at_once")
    ), "a slot was leaked"


def test_a_keyed_limit_runs_keys_in_parallel_and_each_key_serially(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    results = [tasks.one_per_customer.enqueue(str(journal), customer, n)
               for n in range(3) for customer in ("acme", "globex")]  # fmt: skip
    burst(concurrency=6)
    for r in results:
        r.refresh()
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    runs = intervals(journal)
    per_customer: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for run in runs:
        per_customer[run[2].split("-")[0]].append(run)
    assert all(most_at_once(r) == 1 for r in per_customer.values())
    assert most_at_once(runs) == 2  # one of each customer at once


def test_a_keyed_limit_needs_its_argument_in_every_call(clean_redis: redis.Redis) -> None:
    with pytest.raises(InvalidTask, match="argument 'customer'"):
        tasks.one_per_customer.enqueue("journal", n=1)
    assert clean_redis.keys(Keys("task_queue").task("*")) == []


def test_a_queue_concurrency_limit_from_settings(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    results = [tasks.two_at_once.using(backend="limited", queue_name="slow")
               .enqueue(str(journal), n, 0.2) for n in range(4)]  # fmt: skip
    burst("limited", concurrency=4)
    for r in results:
        r.refresh()
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    assert most_at_once(intervals(journal)) == 1  # the queue's limit, below the task's own 2


@pytest.mark.parametrize(
    ("option", "problem"),
    [({"emails": {"rate_limit": "10 per second"}}, "'<count>/<unit>'"),
     ({"emails": {"concurrency_limit": 0}}, "positive integer"),
     ({"emails": {"speed": 3}}, "'queue_limits'['emails']"), ("fast", "must be a dict")],
)  # fmt: skip
def test_malformed_queue_limits_are_E009(option: Any, problem: str) -> None:
    backend = RedisBackend("x", {"BACKEND": "x", "queue_limits": option})
    [message] = backend.check()
    assert message.id == "redis_tasks.E009" and problem in message.msg


@pytest.mark.parametrize(
    ("options", "problem"),
    [({"rate_limit": "fast"}, "'<count>/<unit>'"), ({"concurrency_limit": -1}, "positive"),
     ({"limit_key": "n"}, "needs a rate_limit"),
     ({"concurrency_limit": 1, "limit_key": "nope"}, "not an argument")],
)  # fmt: skip
def test_malformed_task_limits_are_refused_at_decoration(options: Any, problem: str) -> None:
    from redis_tasks.task import task

    with pytest.raises(InvalidTask, match=problem):
        task(**options)(tasks.add.func)


# --- pause and resume -------------------------------------------------------------------------


def test_a_paused_queue_keeps_its_tasks_while_others_run(clean_redis: redis.Redis) -> None:
    inspector = Inspector(task_backends["default"])
    inspector.pause("emails")
    held = tasks.add.using(queue_name="emails").enqueue(1, 1)  # enqueues go on
    other = tasks.add.using(queue_name="reports").enqueue(2, 2)
    burst()
    held.refresh()
    other.refresh()
    assert other.status == TaskResultStatus.SUCCESSFUL and held.status == TaskResultStatus.READY
    assert inspector.overview()["paused"] == ["emails"]
    inspector.resume("emails")
    burst()
    held.refresh()
    assert held.status == TaskResultStatus.SUCCESSFUL and inspector.paused() == []


def test_pause_and_resume_from_the_command_line_hold_across_workers(
    workers: Any, clean_redis: redis.Redis
) -> None:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("redis_tasks", "--backend", "default", "pause", "emails", stdout=out)
    assert "paused queues: emails" in out.getvalue()
    held = tasks.add.using(queue_name="emails").enqueue(1, 1)
    worker = workers("--backend", "default", "--queue", "emails")  # started after the pause
    # Its claim found nothing to take: it waits for work (besides its wait for cancels).
    wait_until(lambda: int(clean_redis.info("clients")["blocked_clients"]) >= 2, timeout=20)
    held.refresh()
    assert held.status == TaskResultStatus.READY and worker.poll() is None
    call_command("redis_tasks", "--backend", "default", "resume", "emails", stdout=out)
    finished([held], timeout=10)
    assert held.status == TaskResultStatus.SUCCESSFUL


# --- cancelling a running task ----------------------------------------------------------------


def test_a_running_async_task_is_cancelled_and_its_slot_freed(
    tmp_path: Path, background: Any
) -> None:
    journal = tmp_path / "journal"
    first = tasks.async_waits_long.enqueue(str(journal))
    second = tasks.async_waits_long.enqueue(str(journal))  # waits for the one slot
    background(concurrency=4)
    wait_until(lambda: len(stamps(journal)) == 1)
    started = time.monotonic()
    Inspector(task_backends["default"]).cancel(first.id)
    wait_until(lambda: first.refresh() or first.is_finished, timeout=5)
    assert time.monotonic() - started < 3
    assert first.status == TaskResultStatus.FAILED and first.attempts == 1
    assert first.errors[-1].exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    wait_until(lambda: len(stamps(journal)) == 2)  # the slot went to the next one
    Inspector(task_backends["default"]).cancel(second.id)
    wait_until(lambda: second.refresh() or second.is_finished, timeout=5)
    assert second.status == TaskResultStatus.FAILED


def test_a_running_sync_task_is_told_and_one_that_ignores_it_is_recorded_cancelled(
    tmp_path: Path, background: Any
) -> None:
    checks, ignores = tmp_path / "checks", tmp_path / "ignores"
    polite = tasks.sync_checks_for_cancel.enqueue(str(checks))
    stubborn = tasks.sync_ignores_cancel.enqueue(str(ignores), 1.5)
    background(concurrency=4)
    wait_until(lambda: stamps(checks) and stamps(ignores))
    inspector = Inspector(task_backends["default"])
    inspector.cancel(polite.id)
    inspector.cancel(stubborn.id)
    wait_until(lambda: polite.refresh() or polite.is_finished, timeout=5)
    assert polite.errors[-1].exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    wait_until(lambda: stubborn.refresh() or stubborn.is_finished, timeout=10)
    assert stubborn.status == TaskResultStatus.FAILED and stubborn.attempts == 1
    assert stubborn.errors[-1].exception_class_path == "redis_tasks.exceptions.TaskCancelled"


def test_cancelling_a_held_back_task_takes_it_out_of_its_hold(clean_redis: redis.Redis) -> None:
    first, held = tasks.once_a_minute.enqueue(1), tasks.once_a_minute.enqueue(2)
    burst()
    held.refresh()
    assert first.refresh() or first.status == TaskResultStatus.SUCCESSFUL
    assert held.status == TaskResultStatus.READY
    Inspector(task_backends["default"]).cancel(held.id)
    held.refresh()
    assert held.status == TaskResultStatus.FAILED
    assert Inspector(task_backends["default"]).overview()["held"] == {}


def test_a_deferred_rate_limited_task_still_waits_for_its_time() -> None:
    from django.utils import timezone

    later = tasks.once_a_minute.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1)
    burst()
    later.refresh()
    assert later.status == TaskResultStatus.READY
