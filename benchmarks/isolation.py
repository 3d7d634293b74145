"""What running a task in a child process costs: the same no-op sync tasks drained in the
worker's own threads and in isolated child processes, by an in-process burst worker.

    .venvs/bench/bin/python benchmarks/isolation.py [--tasks 2000] [--runs 3]

Prints the drain rate and time per task of each, the median of the runs, and the difference
per task (what isolation adds; the children are started once, before the timed drain).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    options = parser.parse_args()

    from benchmarks.in_process import django_on_private_redis

    with django_on_private_redis():
        from benchmarks.bench_tasks import isolated_noop, noop

        from redis_tasks.backend import RedisBackend
        from redis_tasks.compat import task_backends
        from redis_tasks.worker import Worker

        backend = task_backends["default"]
        assert isinstance(backend, RedisBackend)

        def drain(task: object, count: int) -> float:
            backend.enqueue_many(task, [((), {})] * count)
            worker = Worker([backend], burst=True, concurrency=options.concurrency)
            start = time.perf_counter()
            asyncio.run(worker.run())
            return time.perf_counter() - start

        drain(isolated_noop, options.concurrency * 2)  # warm: not timed (but children are not
        # kept across workers, so each timed run starts its own: see the note printed below)
        figures = {}
        for name, task in (("in-process", noop), ("isolated", isolated_noop)):
            seconds = statistics.median(drain(task, options.tasks) for _ in range(options.runs))
            figures[name] = seconds / options.tasks
            print(f"{name:>10}: {options.tasks / seconds:8.0f} tasks/s  "
                  f"{seconds / options.tasks * 1e6:8.0f} us a task")  # fmt: skip
        extra = figures["isolated"] - figures["in-process"]
        print(
            f"isolation adds {extra * 1e6:.0f} us a task at --concurrency "
            f"{options.concurrency} ({options.tasks} tasks a run, median of {options.runs}; "
            "each run also starts its children)"
        )


if __name__ == "__main__":
    main()
