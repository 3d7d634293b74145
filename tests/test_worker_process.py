"""The worker as users run it: `manage.py redis_tasks_worker` in its own process, real signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import redis

from redis_tasks.compat import TaskResultStatus
from redis_tasks.keys import Keys
from redis_tasks.waiting import wait
from tests import tasks
from tests.helpers import manage, wait_until


def refreshed(result: Any) -> Any:
    result.refresh()
    return result


def test_burst_worker_process_runs_tasks_and_exits_0() -> None:
    results = [tasks.add.enqueue(i, 1) for i in range(20)]
    results += [tasks.async_add.enqueue(i, 2) for i in range(20)]
    proc = manage("redis_tasks_worker", "--burst", "--concurrency", "4")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert [refreshed(r).return_value for r in results] == [i + 1 for i in range(20)] + [
        i + 2 for i in range(20)
    ]
    assert all(r.worker_ids[0].split(":")[1] == str(proc.pid) for r in results)


def test_progress_bar_in_burst_mode() -> None:
    for i in range(30):
        tasks.add.enqueue(i, 1)
    proc = manage("redis_tasks_worker", "--burst", "--progress")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "30/30 tasks" in out and "/s" in out and "ETA" in out


def test_max_tasks_process_exits_after_n() -> None:
    results = [tasks.add.enqueue(i, 1) for i in range(6)]
    proc = manage("redis_tasks_worker", "--max-tasks", "2", "--concurrency", "1")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert sum(refreshed(r).status == TaskResultStatus.SUCCESSFUL for r in results) == 2, (
        [(r.status, r.worker_ids, r.errors) for r in results],
        out[-2000:],
    )


def test_processes_replace_a_child_that_ran_its_max_tasks() -> None:
    results = [tasks.add.enqueue(i, 1) for i in range(8)]
    proc = manage("redis_tasks_worker", "--processes", "2", "--max-tasks", "2",
                  "--max-tasks-jitter", "0", "--concurrency", "1")  # fmt: skip
    try:
        for result in results:  # 8 tasks, 2 a process: at least 4 processes ran them
            wait(result, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    pids = {refreshed(r).worker_ids[0].split(":")[1] for r in results}
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    assert len(pids) >= 4 and str(proc.pid) not in pids, pids


def test_processes_stop_while_children_are_being_replaced() -> None:
    """Children recycled after every task, and a stop in the middle: it reaches each child,
    one forked at that very moment included (else the supervisor would wait for it for ever),
    and the supervisor exits 0."""
    results = [tasks.add.enqueue(i, 1) for i in range(60)]
    proc = manage("redis_tasks_worker", "--processes", "2", "--max-tasks", "1",
                  "--concurrency", "1")  # fmt: skip
    try:
        wait_until(lambda: sum(refreshed(r).is_finished for r in results[:10]) >= 6, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    done = [r for r in results if refreshed(r).is_finished]
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in done)
    assert len({r.worker_ids[0] for r in done}) == len(done)  # one task a process


def test_max_tasks_jitter_adds_at_most_its_value_and_needs_max_tasks() -> None:
    from redis_tasks.management.commands.redis_tasks_worker import _with_jitter

    drawn = {_with_jitter(10, 3) for _ in range(200)}
    assert drawn == {10, 11, 12, 13}
    assert _with_jitter(10, None) == _with_jitter(10, 0) == 10 and _with_jitter(None, 5) is None
    proc = manage("redis_tasks_worker", "--max-tasks-jitter", "5", "--burst")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "give --max-tasks too" in out


def test_unknown_backend_or_queue_is_a_clear_error() -> None:
    proc = manage("redis_tasks_worker", "--backend", "nope", "--burst")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "No task backend 'nope'" in out
    proc = manage("redis_tasks_worker", "--backend", "immediate", "--burst")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "not a RedisBackend" in out
    proc = manage("redis_tasks_worker", "--backend", "other", "--queue", "alternate", "--burst")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "not in QUEUES" in out


def test_sigterm_stops_claiming_and_lets_running_tasks_finish(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    proc = manage("redis_tasks_worker", "--concurrency", "1")
    wait_until(started.exists)
    waiting = tasks.add.enqueue(1, 1)  # queued after the signal: must stay queued
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: proc.stdout is not None and "no new tasks" in proc.stdout.readline())
    release.touch()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert refreshed(running).return_value == "released"
    assert refreshed(waiting).status == TaskResultStatus.READY


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "never"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    proc = manage("redis_tasks_worker", "--concurrency", "1")
    wait_until(started.exists)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: proc.stdout is not None and "no new tasks" in proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 1
    # Still owned by the dead worker; its lease (not yet expired) will bring it back.
    assert refreshed(running).status == TaskResultStatus.RUNNING


def test_processes_runs_several_worker_processes(tmp_path: Path) -> None:
    results = [tasks.sleeps.enqueue(0.2) for _ in range(40)]  # 4 s for one process alone
    proc = manage("redis_tasks_worker", "--processes", "2", "--burst", "--concurrency", "2")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    pids = {refreshed(r).worker_ids[0].split(":")[1] for r in results}
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    assert len(pids) == 2 and str(proc.pid) not in pids


def test_processes_passes_sigterm_on_and_exits_0(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    proc = manage("redis_tasks_worker", "--processes", "2", "--concurrency", "1")
    wait_until(started.exists)
    proc.send_signal(signal.SIGTERM)
    release.touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert refreshed(running).return_value == "released"


def both_children_serving(client: redis.Redis) -> bool:
    """Both children registered: their signal handlers are in place."""
    return int(client.zcard(Keys("task_queue").workers)) == 2


def test_processes_keeps_the_grace_period_when_every_process_is_signalled(
    tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """systemd's default KillMode signals every process of the unit, so each child gets the
    stop twice (directly and forwarded): neither is taken for "exit now"; a second signal to
    the supervisor still is."""
    started, release = tmp_path / "started", tmp_path / "release"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    proc = manage(
        "redis_tasks_worker", "--processes", "2", "--concurrency", "1", start_new_session=True
    )
    wait_until(started.exists)
    wait_until(lambda: both_children_serving(clean_redis))
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2
    # Each child in a group of its own: Ctrl-C in a terminal reaches only the supervisor.
    assert all(os.getpgid(int(pid)) == int(pid) for pid in children)
    for pid in [proc.pid, *map(int, children)]:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.kill(int(pid), signal.SIGTERM)
    release.touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert refreshed(running).return_value == "released"
    assert "exiting now" not in out


def test_processes_second_signal_to_the_supervisor_exits_now(
    tmp_path: Path, clean_redis: redis.Redis
) -> None:
    started, release, log = tmp_path / "started", tmp_path / "release", tmp_path / "log"
    running = tasks.wait_for_file.enqueue(str(started), str(release))
    with log.open("w") as output:
        proc = manage("redis_tasks_worker", "--processes", "2", "--concurrency", "1", stdout=output)
        wait_until(started.exists)
        wait_until(lambda: both_children_serving(clean_redis))
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: log.read_text().count("no new tasks are claimed") == 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1
    assert "Second stop signal (SIGUSR1): exiting now" in log.read_text()
    assert refreshed(running).status == TaskResultStatus.RUNNING  # left to its lease


def test_processes_children_stop_when_the_supervisor_is_killed() -> None:
    proc = manage("redis_tasks_worker", "--processes", "2")
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    children = wait_until(
        lambda: len(children_file.read_text().split()) == 2 and children_file.read_text().split()
    )
    proc.kill()
    proc.communicate(timeout=30)

    def gone(pid: str) -> bool:
        try:  # a zombie (reaped by init later) counts as gone
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
        except FileNotFoundError:
            return True

    wait_until(lambda: all(gone(pid) for pid in children), timeout=30)
