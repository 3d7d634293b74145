"""`manage.py redis_tasks`: status, list, show, retry, cancel, purge, drain; the worker registry."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command

from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.keys import Keys
from redis_tasks.ops import Inspector
from tests import tasks
from tests.helpers import burst, wait_until


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("redis_tasks", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def run_json(*args: str) -> Any:
    return json.loads(run("--backend", "default", "--json", *args))


def refreshed(result: Any) -> Any:
    result.refresh()
    return result


def test_status_counts_every_state(clean_redis: redis.Redis) -> None:
    tasks.fail.enqueue()
    tasks.add.enqueue(1, 1)
    burst()
    tasks.add.using(queue_name="q2").enqueue(1, 1)
    from datetime import timedelta

    from django.utils import timezone

    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    clean_redis.zadd(Keys("task_queue").dead, {"ghost": 1})
    [view] = run_json("status")
    assert view["totals"] == {"ready": 1, "deferred": 1, "running": 0, "failed": 1,
                              "successful": 1, "dead": 1}  # fmt: skip
    assert view["queues"]["q2"] == {"ready": 1, "deferred": 0}
    text = run("--backend", "default", "status")
    assert "Backend 'default'" in text and "q2" in text and "failed 1" in text


def test_list_pages_through_a_state() -> None:
    results = [tasks.add.enqueue(i, i) for i in range(7)]
    first = run_json("list", "ready", "--per-page", "5")
    second = run_json("list", "ready", "--per-page", "5", "--page", "2")
    assert [r["id"] for r in first + second] == [r.id for r in results]
    assert first[0]["task"] == "tests.tasks.add" and first[0]["status"] == "READY"
    assert run_json("list", "ready", "--task", "tests.tasks.nope") == []


def test_show_prints_every_error_traceback() -> None:
    result = tasks.fail.enqueue("broken")
    burst()
    text = run("show", result.id)
    assert "status: FAILED" in text and "error 1: builtins.ValueError" in text
    assert "raise ValueError(message)" in text
    detail = run_json("show", result.id)
    assert detail["args"] == ["broken"] and detail["attempts"] == 1


def test_retry_runs_a_failed_task_again() -> None:
    result = tasks.fail.enqueue()
    burst()
    assert run_json("retry", result.id, "--yes") == {result.id: "ok"}
    assert refreshed(result).status == TaskResultStatus.READY
    burst()
    assert refreshed(result).attempts == 2 and len(result.errors) == 2


def test_cancel_a_waiting_task_and_refuse_a_finished_one() -> None:
    waiting = tasks.add.enqueue(1, 1)
    assert run_json("cancel", waiting.id, "--yes") == {waiting.id: "ok"}
    assert refreshed(waiting).status == TaskResultStatus.FAILED
    assert waiting.errors[-1].exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    assert burst().tasks_done == 0
    with pytest.raises(CommandError, match="could not be cancelled"):
        run("--backend", "default", "cancel", waiting.id, "--yes")


def test_destructive_actions_ask_first() -> None:
    waiting = tasks.add.enqueue(1, 1)
    with pytest.raises(CommandError, match="pass --yes"):
        run("cancel", waiting.id)  # no terminal to ask on
    assert refreshed(waiting).status == TaskResultStatus.READY


def test_purge_deletes_old_results(clean_redis: redis.Redis) -> None:
    old = tasks.add.enqueue(1, 1)
    burst()
    assert run_json("purge", "--older-than", "1h", "--yes") == {"default": 0}
    clean_redis.zadd(Keys("task_queue").done("SUCCESSFUL"), {old.id: 1})  # finished in 1970
    assert run_json("purge", "--older-than", "1h", "--yes") == {"default": 1}
    assert not clean_redis.exists(Keys("task_queue").task(old.id))


def test_drain_cancels_every_waiting_task_of_a_queue() -> None:
    doomed = [tasks.add.using(queue_name="doomed").enqueue(i, i) for i in range(30)]
    kept = tasks.add.enqueue(1, 1)
    err = io.StringIO()
    out = io.StringIO()
    call_command("redis_tasks", "--backend", "default", "--json", "drain", "doomed", "--yes",
                 stdout=out, stderr=err)  # fmt: skip
    assert json.loads(out.getvalue()) == {"default": 30}
    assert err.getvalue() == ""  # no progress bar without a terminal
    assert all(refreshed(r).status == TaskResultStatus.FAILED for r in doomed)
    assert refreshed(kept).status == TaskResultStatus.READY


def test_workers_register_with_their_tasks_and_vanish(background: Any, tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    worker = background(concurrency=3)
    wait_until(started.exists)

    def registered() -> Any:
        return [w for w in run_json("status")[0]["workers"] if w["id"] == worker.worker_id]

    [info] = wait_until(lambda: [w for w in registered() if w["in_flight"]])
    assert info["in_flight"] == [running.id] and info["concurrency"] == 3 and info["pid"] > 0
    release.touch()
    wait_until(lambda: refreshed(running).is_finished)
    worker.request_stop()
    wait_until(lambda: not registered())  # unregistered on a clean stop


def test_a_dead_worker_disappears_by_itself(clean_redis: redis.Redis) -> None:
    backend = task_backends["default"]
    backend.store.register_worker(clean_redis, "ghost:1:x", {"pid": 1}, ttl=0.3)
    inspector = Inspector(backend)
    assert [w.id for w in inspector.workers()] == ["ghost:1:x"]
    wait_until(lambda: inspector.workers() == [])
