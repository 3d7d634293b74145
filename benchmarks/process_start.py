"""How soon a worker process of ``redis_tasks_worker --processes N`` runs its first task: from
the command's start, and from a child's recycling (``--max-tasks``) to its replacement's first
task.

Why: a child that is a new interpreter imports Python, Django and the project before it claims;
one forked from a supervisor that loaded them already (supervisor.py) does not. A short
``--max-tasks`` pays that on every recycle.

Both are timed on the Redis server's clock (the tasks' ``started_at`` and ``finished_at``):

- start: no-op tasks are queued, the time is read, then ``--processes 2 --concurrency 1``
  starts; the figure is the first task's ``started_at`` minus that time.
- recycle: ``--processes 2 --max-tasks 1 --concurrency 1`` runs 10 no-op tasks, each in a
  fresh process; a task's replacement process is the one that runs the task two places
  later, so the figure is each task's ``started_at`` minus the ``finished_at`` of the task two
  places before it (that process drains, exits, the supervisor notices within 50 ms and starts
  the next, which claims).

``--source=DIR`` runs the worker of another source tree (a checkout of an older commit, for a
before and after). The server is a private ``redis-server`` on a free port.

    python benchmarks/process_start.py [--runs 5] [--source=DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from redis_tasks.testing import RedisServer  # noqa: E402

RECYCLES = 10  # tasks, each run by a fresh process


def setup(url: str) -> None:
    os.environ["REDIS_TASKS_BENCH_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
    import django

    django.setup()


def worker(source: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(source / "src"), str(ROOT)]))
    command = [sys.executable, "-m", "django", "redis_tasks_worker", *args]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def server_ms(backend: Any) -> float:
    seconds, micros = backend.store.connections.sync.time()
    return float(seconds * 1000 + micros / 1000)


def finished(backend: Any, ids: list[str], timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        results = [backend.get_result(i) for i in ids]
        if all(r.is_finished for r in results):
            return results
        if time.monotonic() > deadline:
            raise RuntimeError("the tasks did not finish in time")
        time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def ms(moment: Any) -> float:
    return float(moment.timestamp() * 1000)


def start_to_first_task(backend: Any, source: Path) -> float:
    from benchmarks.bench_tasks import noop

    backend.store.connections.sync.flushdb()
    ids = [noop.enqueue().id for _ in range(2)]
    began = server_ms(backend)
    proc = worker(source, "--processes", "2", "--concurrency", "1")
    try:
        results = finished(backend, ids)
    finally:
        stop(proc)
    return min(ms(r.started_at) for r in results) - began


def recycle_to_first_task(backend: Any, source: Path) -> list[float]:
    from benchmarks.bench_tasks import noop

    backend.store.connections.sync.flushdb()
    ids = [noop.enqueue().id for _ in range(RECYCLES)]
    proc = worker(source, "--processes", "2", "--max-tasks", "1", "--concurrency", "1")
    try:
        results = sorted(finished(backend, ids), key=lambda r: r.started_at)
    finally:
        stop(proc)
    pids = {r.worker_ids[0].split(":")[1] for r in results}
    if len(pids) != RECYCLES:
        raise RuntimeError(f"{RECYCLES} tasks ran in {len(pids)} processes, not one each")
    replaced = zip(results, results[2:], strict=False)
    return [ms(b.started_at) - ms(a.finished_at) for a, b in replaced]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source", default=str(ROOT), help="the source tree whose worker runs")
    options = parser.parse_args()
    source = Path(options.source).resolve()
    server = RedisServer(None, None).start()
    try:
        setup(server.url)
        from redis_tasks.compat import task_backends

        backend = task_backends["default"]
        starts, recycles = [], []
        for run in range(options.runs):
            starts.append(start_to_first_task(backend, source))
            recycles += recycle_to_first_task(backend, source)
            print(f"run {run + 1}: start {starts[-1]:.0f} ms, recycles "
                  f"{', '.join(f'{r:.0f}' for r in recycles[2 - RECYCLES:])} ms")  # fmt: skip
    finally:
        server.stop()
    print(f"\n{source}: start -> first task p50 {statistics.median(starts):.0f} ms "
          f"({min(starts):.0f}-{max(starts):.0f}); recycle -> first task p50 "
          f"{statistics.median(recycles):.0f} ms ({min(recycles):.0f}-{max(recycles):.0f}), "
          f"{len(recycles)} recycles")  # fmt: skip


if __name__ == "__main__":
    main()
