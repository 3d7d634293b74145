"""What flow control costs: the drain rate of unlimited no-op tasks with limits configured
elsewhere (a rate- and a concurrency-limited queue, and a backlog held back by a task's own rate
limit) against none, A/B alternating in one run; and the CPU of a worker whose whole backlog is
held back.

    .venvs/bench/bin/python benchmarks/flow_control.py [--tasks 10000] [--rounds 3]
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
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    from benchmarks.in_process import django_on_private_redis

    with django_on_private_redis() as url:
        import redis
        from benchmarks.bench_tasks import noop, throttled_noop
        from django.conf import settings

        from redis_tasks.backend import RedisBackend
        from redis_tasks.worker import Worker

        client = redis.Redis.from_url(url)
        base = dict(settings.TASKS["default"])
        limits = {"mail": {"rate_limit": "10/s"}, "export": {"concurrency_limit": 1}}
        plain = RedisBackend("default", base)
        limited = RedisBackend("default", {**base, "queue_limits": limits})

        def drain(backend: RedisBackend) -> float:
            client.flushall()
            if backend is limited:  # a backlog held back elsewhere, as in a busy project
                backend.enqueue_many(throttled_noop, [((), {})] * 1000)
                backend.enqueue_many(noop.using(queue_name="export"), [((), {})] * 100)
            for _ in range(options.tasks // 1000):
                backend.enqueue_many(noop, [((), {})] * 1000)
            worker = Worker([backend], queues=["default"], burst=True, concurrency=40)
            start = time.perf_counter()
            asyncio.run(worker.run())
            return float(options.tasks) / (time.perf_counter() - start)

        rates: dict[str, list[float]] = {"no limits": [], "limits elsewhere": []}
        for _ in range(options.rounds):
            rates["no limits"].append(drain(plain))
            rates["limits elsewhere"].append(drain(limited))
        for name, values in rates.items():
            print(f"{name:>16}: {statistics.median(values):8.0f} tasks/s "
                  f"(runs: {', '.join(f'{v:.0f}' for v in values)})")  # fmt: skip

        # A worker whose whole backlog is held back by a rate limit of 2/s.
        client.flushall()
        plain.enqueue_many(throttled_noop, [((), {})] * 5000)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
        worker = subprocess.Popen([sys.executable, "-m", "django", "redis_tasks_worker", "-v", "0"],
                                  cwd=ROOT, env=env)  # fmt: skip
        try:
            time.sleep(3)  # started, and the backlog held back
            before, started = _cpu(worker.pid), time.monotonic()
            time.sleep(10)
            used = (_cpu(worker.pid) - before) / (time.monotonic() - started)
        finally:
            worker.terminate()
            worker.wait(30)
        ran = int(client.hget("redis_tasks:{default}:stats", "started") or 0)
        print(f"a throttled backlog of 5,000 (2/s): the worker used {used * 100:.1f}% of a CPU "
              f"over 10 s and started {ran} tasks in ~13 s")  # fmt: skip


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
