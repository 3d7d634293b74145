"""Drain rate with 1, 2 and 4 worker processes, on one Redis and on a 3-master Redis Cluster.

Why: a worker process is one event loop on one core; more processes (``--processes N``) use
more cores, and a cluster spreads the work of several backend instances over its masters. This
shows how far each goes on this machine.

For each topology and process count: N no-op tasks are queued first (``enqueue_many``), spread
evenly over the backend instances (one instance on one Redis; three on the cluster, each
instance's keys on its own master). Then ``redis_tasks_worker --burst --processes P`` serves
every instance and exits when nothing is left. The rate is measured on the Redis clock from the
first task finished to the last (the ``done:SUCCESSFUL`` index of every instance), so process
start-up is not counted; processes that start later than the first only join a run already
under way, which the large N keeps small. The servers are private ones on free ports; the
cluster is formed as in the test suite (``tests/topologies.py``).

    python benchmarks/scale.py [--tasks 30000] [--runs 3] [--processes 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


from redis_tasks.testing import RedisServer  # noqa: E402


def drain_once(env: dict[str, str], namespaces: list[str], processes: int, tasks: int) -> float:
    """Queue ``tasks`` over the instances, drain them with ``processes`` processes; tasks/s."""
    fill = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--fill", str(tasks)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert fill.returncode == 0, fill.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "django", "redis_tasks_worker", "--burst",
         "--concurrency", "50", "--processes", str(processes)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    return float(json.loads(subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", str(tasks)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout))  # fmt: skip


def fill(tasks: int) -> None:
    """In a child with the scale settings: flush, then queue the tasks over every instance."""
    import django

    django.setup()
    from benchmarks.bench_tasks import noop
    from benchmarks.scale_settings import ALIASES

    from redis_tasks.compat import task_backends

    backends = [task_backends[alias] for alias in ALIASES]
    for backend in backends:
        client: Any = backend.store.connections.sync
        for key in client.scan_iter(match=f"{backend.store.keys.prefix}*", count=1000):
            client.delete(key)
    share = tasks // len(backends)
    for backend in backends:
        task = noop.using(backend=backend.alias)
        for start in range(0, share, 1000):
            backend.enqueue_many(task, [((), {})] * min(1000, share - start))


def measure(tasks: int) -> None:
    """Print the drain rate: tasks over the span from the first finish to the last."""
    import django

    django.setup()
    from benchmarks.scale_settings import ALIASES

    from redis_tasks.compat import task_backends

    count, rate = done_rate([task_backends[alias].store for alias in ALIASES])
    share = tasks // len(ALIASES) * len(ALIASES)
    assert count == share, f"{count} of {share} tasks finished"
    print(json.dumps(rate))


def done_rate(stores: list[Any]) -> tuple[int, float]:
    """The tasks finished successfully in ``stores``, and their rate: tasks per second over
    the span from the first finish to the last, on the Redis clock (``done:SUCCESSFUL``)."""
    firsts, lasts, count = [], [], 0
    for store in stores:
        client: Any = store.connections.sync
        index = store.keys.done("SUCCESSFUL")
        count += client.zcard(index)
        firsts.append(client.zrange(index, 0, 0, withscores=True)[0][1])
        lasts.append(client.zrange(index, -1, -1, withscores=True)[0][1])
    return count, (count - 1) / ((max(lasts) - min(firsts)) / 1000)


def topologies() -> list[tuple[str, Any, bool, list[str]]]:
    from tests.topologies import LocalCluster

    single = RedisServer().start()
    cluster = LocalCluster(masters=3).start()
    return [
        ("one Redis, 1 instance", single, False, ["default"]),
        ("3-master cluster, 3 instances", cluster, True, cluster.namespace_per_node()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--fill", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.fill is not None:
        return fill(options.fill)
    if options.measure is not None:
        return measure(options.measure)
    found = topologies()
    try:
        print(f"| topology | {' | '.join(f'{p} process(es)' for p in options.processes)} |")
        print(f"|---|{'---|' * len(options.processes)}")
        for name, server, cluster, namespaces in found:
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "benchmarks.scale_settings",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                "REDIS_TASKS_SCALE_URL": server.url,
                "REDIS_TASKS_SCALE_CLUSTER": "1" if cluster else "0",
                "REDIS_TASKS_SCALE_NAMESPACES": json.dumps(namespaces),
            }
            cells = []
            for processes in options.processes:
                rates = [
                    drain_once(env, namespaces, processes, options.tasks)
                    for _ in range(options.runs)
                ]
                print(f"{name}, {processes} process(es): {rates}", file=sys.stderr)
                cells.append(
                    f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
                )
            print(f"| {name} | {' | '.join(cells)} |", flush=True)
    finally:
        for _, server, _, _ in found:
            server.stop()


if __name__ == "__main__":
    main()
