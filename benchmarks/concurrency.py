"""Drain rate of one worker process by ``--concurrency``: no-op sync and async tasks.

Why: a worker claims as many tasks as it has free slots, in one trip with the finishes on their
way, and each run of the claim or finish script has a large fixed cost in Redis
(``redis_cost.py``). So ``--concurrency`` also sets how many tasks share a trip; this measures
what that is worth for very short tasks, to choose the setting the comparison drains with.

Each round drains N queued no-op tasks of each kind once per setting, the settings in turn (the
order reversed every other round), so the machine's drift reaches every setting alike. A drain
is ``redis_tasks_worker --burst --concurrency C`` (one process, ``bench_settings.py``, the
framework's per-task log off); its rate is taken on the Redis clock from the first task
finished to the last (the ``done:SUCCESSFUL`` index), so start-up is not counted. The server is
a private ``redis-server`` on a free port.

    python benchmarks/concurrency.py [--tasks 8000] [--rounds 5] [--concurrency 10 20 40 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.scale import done_rate  # noqa: E402

from redis_tasks.testing import RedisServer  # noqa: E402


def drain_once(backend: Any, task: Any, tasks: int, concurrency: int, env: dict[str, str]) -> float:
    """Queue ``tasks`` tasks, drain them with one burst worker; tasks per second."""
    client: Any = backend.store.connections.sync
    client.flushdb()
    for start in range(0, tasks, 1000):
        backend.enqueue_many(task, [((), {})] * min(1000, tasks - start))
    worker = subprocess.run(
        [sys.executable, "-m", "django", "redis_tasks_worker", "--burst", "-v", "0",
         "--concurrency", str(concurrency)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if worker.returncode != 0:
        raise RuntimeError(worker.stderr[-2000:])
    count, rate = done_rate([backend.store])
    if count != tasks:
        raise RuntimeError(f"{count} of {tasks} tasks finished")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 20, 40, 100])
    options = parser.parse_args()
    server = RedisServer(None, None).start()
    try:
        env = {
            **os.environ,
            "REDIS_TASKS_BENCH_URL": server.url,
            "DJANGO_SETTINGS_MODULE": "benchmarks.bench_settings",
            "REDIS_TASKS_BENCH_TASK_LOG": os.environ.get("REDIS_TASKS_BENCH_TASK_LOG", "WARNING"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
        os.environ.update(env)
        import django

        django.setup()
        from benchmarks.bench_tasks import anoop, noop

        from redis_tasks.compat import task_backends

        backend = task_backends["default"]
        rates: dict[tuple[str, int], list[float]] = {}
        for round_number in range(options.rounds):
            order = options.concurrency[:: -1 if round_number % 2 else 1]
            for concurrency in order:
                for kind, task in (("sync", noop), ("async", anoop)):
                    rate = drain_once(backend, task, options.tasks, concurrency, env)
                    rates.setdefault((kind, concurrency), []).append(rate)
                    print(f"  round {round_number + 1}, --concurrency {concurrency}, {kind}: "
                          f"{rate:,.0f} tasks/s", file=sys.stderr, flush=True)  # fmt: skip
        print(f"Drain of {options.tasks:,} no-op tasks, one worker process; median of "
              f"{options.rounds} rounds (min-max), tasks/s")  # fmt: skip
        print("| `--concurrency` | sync | async |")
        print("|---|---|---|")
        for concurrency in options.concurrency:
            cells = []
            for kind in ("sync", "async"):
                values = rates[(kind, concurrency)]
                cells.append(f"{statistics.median(values):,.0f} "
                             f"({min(values):,.0f}-{max(values):,.0f})")  # fmt: skip
            print(f"| {concurrency} | {' | '.join(cells)} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
