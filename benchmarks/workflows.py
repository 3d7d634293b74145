"""What a chord costs, and how soon a waiter wakes.

A chord of N members (enqueue, drain, callback) against the same N as plain tasks, A/B
alternating in one run, drained by one in-process burst worker; then the wake-up latency of
``waiting.wait`` after a task's finish (the task's ``finished_at`` to the waiter's return), with
a worker in another process.

    .venvs/bench/bin/python benchmarks/workflows.py [--members 10000] [--rounds 3] [--waits 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waits", type=int, default=300)
    options = parser.parse_args()

    from benchmarks.in_process import django_on_private_redis

    with django_on_private_redis() as url:
        import redis
        from benchmarks.bench_tasks import noop, total, value

        from redis_tasks.backend import RedisBackend
        from redis_tasks.compat import task_backends
        from redis_tasks.waiting import wait
        from redis_tasks.worker import Worker
        from redis_tasks.workflows import chord, step

        client = redis.Redis.from_url(url)
        backend = task_backends["default"]
        assert isinstance(backend, RedisBackend)
        n = options.members

        def drain() -> float:
            worker = Worker([backend], burst=True, concurrency=40)
            start = time.perf_counter()
            asyncio.run(worker.run())
            return time.perf_counter() - start

        def plain() -> tuple[float, float]:
            client.flushall()
            start = time.perf_counter()
            for at in range(0, n, 1000):
                backend.enqueue_many(value, [((i,), {}) for i in range(at, min(at + 1000, n))])
            return time.perf_counter() - start, drain()

        def as_chord() -> tuple[float, float]:
            client.flushall()
            start = time.perf_counter()
            handle = chord([step(value, i) for i in range(n)], step(total)).enqueue()
            enqueued = time.perf_counter() - start
            drained = drain()
            [*_, callback] = handle.results()
            assert callback.return_value == n * (n - 1) // 2, callback.status
            return enqueued, drained

        runs: dict[str, list[tuple[float, float]]] = {"plain tasks": [], "chord": []}
        for _ in range(options.rounds):
            runs["plain tasks"].append(plain())
            runs["chord"].append(as_chord())
        print(f"{n:,} members, {options.rounds} rounds (median; enqueue + drain, seconds)")
        medians = {}
        for name, pairs in runs.items():
            enq = statistics.median(p[0] for p in pairs)
            dr = statistics.median(p[1] for p in pairs)
            medians[name] = enq + dr
            print(f"{name:>12}: enqueue {enq:6.3f}  drain {dr:6.3f}  end to end {enq + dr:6.3f}"
                  f"  ({n / (enq + dr):,.0f} tasks/s)")  # fmt: skip
        overhead = medians["chord"] / medians["plain tasks"] - 1
        print(f"chord overhead end to end: {overhead * 100:+.1f}%")

        client.flushall()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
        worker = subprocess.Popen([sys.executable, "-m", "django", "redis_tasks_worker", "-v", "0"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait(noop.enqueue(), timeout=30)  # the worker is up
            latencies = []
            for _ in range(options.waits):
                result = wait(noop.enqueue(), timeout=30)
                woke = time.time()
                latencies.append((woke - result.finished_at.timestamp()) * 1000)
        finally:
            worker.terminate()
            worker.wait(30)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"wait wake-up after the finish ({options.waits} waits): "
              f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
