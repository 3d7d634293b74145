"""Isolated tasks (redis_tasks.isolation): each attempt in a child process, so that a crash, a
hard timeout or a memory hog ends that attempt only and the worker goes on."""

from __future__ import annotations

import os
from typing import Any

from redis_tasks.compat import TaskResultStatus
from tests import tasks
from tests.helpers import burst


def finished(*results: Any, backend: str = "default") -> list[Any]:
    worker = burst(backend)
    for r in results:
        r.refresh()
    assert worker.exit_code == 0
    return list(results)


def test_an_isolated_task_runs_in_a_child_and_its_value_comes_back() -> None:
    sync, coroutine = tasks.isolated_pid.enqueue(1, 2), tasks.isolated_async_pid.enqueue()
    finished(sync, coroutine)
    assert sync.status == coroutine.status == TaskResultStatus.SUCCESSFUL
    value, pid = sync.return_value
    assert value == 3 and pid != os.getpid() and coroutine.return_value != os.getpid()


def test_a_child_that_exits_or_segfaults_fails_that_attempt_only() -> None:
    exits, segfaults = tasks.isolated_exit.enqueue(), tasks.isolated_segfault.enqueue()
    after = tasks.add.using(priority=-1).enqueue(2, 2)  # the worker goes on
    finished(exits, segfaults, after)
    assert exits.status == segfaults.status == TaskResultStatus.FAILED
    assert exits.errors[0].exception_class_path == "redis_tasks.exceptions.ChildProcessDied"
    assert "exit code 7" in exits.errors[0].traceback
    assert "killed by SIGSEGV" in segfaults.errors[0].traceback
    assert after.return_value == 4


def test_a_memory_hog_meets_its_limit_in_its_own_process() -> None:
    hog = tasks.isolated_memory_hog.enqueue()
    finished(hog, backend="isolating")
    assert hog.status == TaskResultStatus.FAILED
    assert hog.errors[0].exception_class_path == "builtins.MemoryError"


def test_a_hung_isolated_task_is_killed_at_its_timeout_not_abandoned() -> None:
    hung = tasks.isolated_hangs.enqueue()
    worker = burst()
    hung.refresh()
    assert hung.status == TaskResultStatus.FAILED
    assert hung.errors[0].exception_class_path == "builtins.TimeoutError"
    assert worker.abandoned_threads == 0


def test_an_exception_in_a_child_is_recorded_and_retried_as_raised() -> None:
    raised = tasks.isolated_raises.enqueue("nope")
    for _ in range(5):
        finished(raised)
        if raised.is_finished:
            break
    assert raised.status == TaskResultStatus.FAILED and raised.attempts == 2
    assert [e.exception_class_path for e in raised.errors] == ["builtins.ValueError"] * 2
    assert raised.errors[0].traceback.rstrip().endswith("ValueError: nope")
