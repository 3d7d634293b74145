"""Workflows (redis_tasks.workflows): chains, groups and chords, advanced by the finish script
in the same atomic step as a task's outcome; and waiting for a result without polling."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import transaction

from redis_tasks.compat import TaskResultStatus
from redis_tasks.exceptions import WaitTimeout
from redis_tasks.waiting import wait
from redis_tasks.workflows import WorkflowHandle, chain, chord, group, step
from tests import tasks
from tests.helpers import burst, child_env, manage, stop_processes, wait_until


@pytest.fixture(autouse=True)
def no_maxsize(settings: Any) -> None:
    """Some of these workflows have hundreds of members."""
    settings.TASKS = {**settings.TASKS, "default": {**settings.TASKS["default"], "maxsize": None}}


def statuses(handle: WorkflowHandle) -> list[Any]:
    return [None if r is None else r.status for r in handle.results()]


def test_a_chain_runs_in_order_passing_each_value_on() -> None:
    handle = chain(step(tasks.wf_double, 3), step(tasks.wf_add, 10), step(tasks.wf_double),
                   step(tasks.wf_add, 1, 2, previous=False)).enqueue()  # fmt: skip
    assert statuses(handle) == [TaskResultStatus.READY, None, None, None]  # one step at a time
    burst()
    results = handle.results()
    assert [r.return_value for r in results] == [6, 16, 32, 3]
    assert [r.args for r in results] == [[3], [6, 10], [16], [1, 2]]
    starts = [r.started_at for r in results]
    assert starts == sorted(starts)
    assert handle.state() == "SUCCESSFUL"
    again = WorkflowHandle.get(handle.id)  # from any process, knowing the id
    assert again.task_ids == handle.task_ids and again.kind == "chain"


def test_a_failed_step_stops_its_chain_and_the_rest_is_visibly_cancelled() -> None:
    handle = chain(step(tasks.wf_double, 1), step(tasks.wf_fail), step(tasks.wf_double)).enqueue()
    burst()
    first, failed, never = handle.results()
    assert first.status == TaskResultStatus.SUCCESSFUL
    assert failed.status == TaskResultStatus.FAILED
    assert never.status == TaskResultStatus.FAILED and never.started_at is None
    assert never.errors[0].exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    assert handle.state() == "FAILED"


def test_cancelling_a_workflow_stops_it_whole() -> None:
    steps = chain(step(tasks.wf_double, 1), step(tasks.wf_double), step(tasks.wf_double))
    handle = steps.enqueue()
    assert handle.cancel() == 1  # the first step; the others are not queued yet
    assert handle.state() == "FAILED"
    ends = [r.errors[-1].exception_class_path for r in handle.results()]
    assert ends == ["redis_tasks.exceptions.TaskCancelled"] * 3
    fan_in = chord([step(tasks.wf_double, n) for n in range(3)], step(tasks.wf_collect)).enqueue()
    assert fan_in.cancel() == 3
    *members, callback = fan_in.results()
    assert {m.status for m in members} == {TaskResultStatus.FAILED}
    assert callback.errors[0].exception_class_path == "redis_tasks.exceptions.ChordMemberFailed"
    assert fan_in.cancel() == 0  # nothing left to cancel
    burst()
    assert all(r.started_at is None for r in (*handle.results(), *fan_in.results()))


def test_a_step_of_something_that_is_not_a_task_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"step\(\) takes a task .*decorate"):
        step(tasks.wf_double.func, 1)
    with pytest.raises(ValueError, match="at least one step"):
        group([])


def test_a_group_runs_its_members_side_by_side() -> None:
    handle = group(step(tasks.sync_rendezvous, "group-4", 4) for _ in range(4)).enqueue()
    burst(concurrency=4)  # each waits until all four run at once
    assert statuses(handle) == [TaskResultStatus.SUCCESSFUL] * 4
    assert handle.state() == "SUCCESSFUL"


def test_a_chord_member_retried_twice_counts_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    handle = chord([step(tasks.wf_flaky_member, n) for n in range(3)],
                   step(tasks.wf_collect, path=str(journal))).enqueue()  # fmt: skip
    for _ in range(10):
        burst()
        if handle.state() != "RUNNING":
            break
    *members, callback = handle.results()
    assert all(m.attempts == 3 for m in members)
    assert callback.args[0] == [0, 1, 2] and callback.return_value == 3
    assert journal.read_text().count("callback") == 1


def test_a_chord_with_a_failed_member_fails_its_callback_unrun() -> None:
    handle = chord([step(tasks.wf_double, 1), step(tasks.wf_fail, 2)], step(tasks.wf_collect))
    running = handle.enqueue()
    burst()
    *_, callback = running.results()
    assert callback.status == TaskResultStatus.FAILED and callback.started_at is None
    assert callback.errors[0].exception_class_path == "redis_tasks.exceptions.ChordMemberFailed"
    assert running.task_ids[1] in callback.errors[0].traceback
    assert running.state() == "FAILED"


def test_a_chord_of_200_fires_its_callback_once_though_a_worker_is_killed(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    handle = chord([step(tasks.wf_square, str(journal), n, 0.05) for n in range(200)],
                   step(tasks.wf_collect, path=str(journal))).enqueue()  # fmt: skip
    env = child_env(REDIS_TASKS_TEST_LEASE="1")
    logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(4)]  # noqa: SIM115
    procs = [manage("redis_tasks_worker", "--concurrency", "8", env=env, stdout=logs[i],
                    stderr=logs[i]) for i in range(3)]  # fmt: skip
    by_pid = {str(proc.pid): proc for proc in procs}

    def running_a_member() -> subprocess.Popen[str] | None:
        """Once 60 members have started: the worker that started the latest (it holds it for
        50 ms). Not a fixed one: a worker slow to start may have claimed nothing yet."""
        lines = journal.read_text().splitlines() if journal.exists() else []
        members = [line.split() for line in lines if line.startswith("member")]
        return by_pid.get(members[-1][2]) if len(members) >= 60 else None

    try:
        victim = wait_until(running_a_member)
        victim.send_signal(signal.SIGKILL)  # mid-way, holding members
        wait_until(lambda: handle.state() != "RUNNING", timeout=90)
    finally:
        stop_processes(procs)
    *members, callback = handle.results()
    assert all(m.status == TaskResultStatus.SUCCESSFUL for m in members)
    assert any(m.errors for m in members), "the kill hit no member: the test proved nothing"
    assert callback.args[0] == [n * n for n in range(200)]
    assert callback.return_value == sum(n * n for n in range(200))
    assert journal.read_text().count("callback") == 1  # exactly once
    assert handle.state() == "SUCCESSFUL"


def test_a_large_group_is_enqueued_in_one_round_trip(clean_redis: redis.Redis) -> None:
    clean_redis.config_resetstat()
    handle = group(step(tasks.wf_double, n) for n in range(2000)).enqueue()
    calls = clean_redis.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert calls <= 2 and len(handle.task_ids) == 2000  # (one more if the script was not loaded)


def test_a_unique_member_that_a_queued_task_stands_for_still_counts() -> None:
    already = tasks.wf_unique_member.enqueue(7)
    handle = chord([step(tasks.wf_unique_member, 7), step(tasks.wf_double, 1)],
                   step(tasks.wf_collect)).enqueue()  # fmt: skip
    burst()
    assert already.refresh() or already.status == TaskResultStatus.SUCCESSFUL
    assert handle.state() == "SUCCESSFUL"
    assert handle.results()[-1].return_value == 7 + 2


@pytest.mark.django_db(transaction=True, databases=["default"])
def test_a_workflow_enqueued_in_a_rolled_back_transaction_leaves_nothing(
    clean_redis: redis.Redis,
) -> None:
    on_commit = [step(tasks.wf_double.using(backend="on_commit"), n) for n in range(3)]
    with pytest.raises(RuntimeError), transaction.atomic():
        chain(*on_commit).enqueue()
        raise RuntimeError("rolled back")
    assert clean_redis.keys("*") == []
    with transaction.atomic():
        handle = chain(*on_commit).enqueue()
        assert clean_redis.keys("*") == []  # not before the commit
    assert handle.results()[0] is not None


# --- waiting ----------------------------------------------------------------------------------


def test_a_wait_returns_within_milliseconds_of_the_finish(background: Any) -> None:
    background()
    result = tasks.sleeps.enqueue(0.3)
    wait(result, timeout=10)
    woke = time.time()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert 0 <= woke - result.finished_at.timestamp() < 0.1


def test_a_wait_for_a_finished_task_returns_at_once_and_one_that_runs_out_raises() -> None:
    done = tasks.add.enqueue(1, 2)
    burst()
    started = time.monotonic()
    assert wait(done, timeout=5).return_value == 3
    assert time.monotonic() - started < 0.5
    never = tasks.add.enqueue(2, 2)  # no worker runs it
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"did not finish within 0\.3s"):
        wait(never, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5


async def test_awaiting_a_result(background: Any) -> None:
    from redis_tasks.waiting import await_result

    background()
    result = await tasks.async_add.aenqueue(2, 3)
    assert (await await_result(result, timeout=10)).return_value == 5


def test_a_workflow_can_be_waited_for(background: Any) -> None:
    background(concurrency=4)
    handle = chord([step(tasks.wf_double, n) for n in range(5)], step(tasks.wf_collect)).enqueue()
    results = handle.wait(timeout=20)
    assert results[-1].return_value == 20


# --- progress ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_progress_is_visible_from_another_process_mid_run_and_after(
    tmp_path: Path, admin_client: Any
) -> None:
    import io

    from django.core.management import call_command
    from django.urls import reverse

    from redis_tasks import progress

    release = tmp_path / "release"
    result = tasks.reports_progress.enqueue(str(release), 5)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = manage("redis_tasks_worker", "--burst", stdout=log, stderr=log)
    try:
        seen = wait_until(
            lambda: (progress.of(result) or {}).get("done") == 2 and progress.of(result)
        )
        result.refresh()
        assert result.status == TaskResultStatus.RUNNING
        assert seen["total"] == 5 and seen["message"] == "step 2"
        out = io.StringIO()
        call_command("redis_tasks", "--backend", "default", "show", result.id, stdout=out)
        assert "progress: 2/5 (40%) step 2" in out.getvalue()
        out = io.StringIO()
        call_command("redis_tasks", "--backend", "default", "status", stdout=out)
        assert result.id in out.getvalue() and "2/5 (40%)" in out.getvalue()
        page = admin_client.get(reverse("admin:redis_tasks_dashboard_task",
                                        args=["default", result.id])).content.decode()  # fmt: skip
        assert '<progress value="2" max="5">' in page
        release.touch()
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert wait(result, timeout=5).return_value == 5
    assert progress.of(result) == {**progress.of(result), "done": 5, "total": 5}  # the last


@pytest.mark.django_db
def test_a_workflow_is_shown_by_the_command_line_and_the_dashboard(admin_client: Any) -> None:
    import io
    import json

    from django.core.management import call_command
    from django.urls import reverse

    handle = chain(step(tasks.wf_double, 1), step(tasks.wf_double)).enqueue()
    burst()
    out = io.StringIO()
    call_command("redis_tasks", "--backend", "default", "workflow", handle.id, "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert shown["state"] == "SUCCESSFUL" and [t["id"] for t in shown["tasks"]] == handle.task_ids
    page = admin_client.get(reverse("admin:redis_tasks_dashboard_workflow",
                                    args=["default", handle.id])).content.decode()  # fmt: skip
    for task_id in handle.task_ids:
        assert reverse("admin:redis_tasks_dashboard_task", args=["default", task_id]) in page
    second = reverse("admin:redis_tasks_dashboard_task", args=["default", handle.task_ids[1]])
    task_page = admin_client.get(second).content.decode()
    assert reverse("admin:redis_tasks_dashboard_workflow", args=["default", handle.id]) in task_page
