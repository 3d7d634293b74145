"""What the in-process benchmarks share (``signing.py``, ``tracing.py``, ``isolation.py``,
``flow_control.py``, ``workflows.py``): Django set up on ``bench_settings`` against a private
redis-server, and the client-cost-and-drain measure the option benchmarks compare."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def django_on_private_redis() -> Iterator[str]:
    """A throwaway redis-server, and Django set up to use it; yields its URL."""
    from redis_tasks.testing import RedisServer

    with RedisServer() as server:
        os.environ["REDIS_TASKS_BENCH_URL"] = server.url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.bench_settings")
        import django

        django.setup()
        yield server.url


def enqueue_and_drain(backend: Any, task: Any, n: int, runs: int) -> tuple[float, float, float]:
    """Client CPU seconds per ``enqueue()`` (n / 10 calls) and per task of ``enqueue_many()``
    (1,000-task calls), best of ``runs``; then a burst worker's drain of all of them at
    ``--concurrency 40``, tasks/s, median of ``runs``."""
    from redis_tasks.worker import Worker

    single, bulk, drain = [], [], []
    for _ in range(runs):
        start = time.process_time()
        for _ in range(n // 10):
            backend.enqueue(task, (), {})
        single.append((time.process_time() - start) / (n // 10))
        start = time.process_time()
        for _ in range(n // 1000):
            backend.enqueue_many(task, [((), {})] * 1000)
        bulk.append((time.process_time() - start) / (n // 1000 * 1000))
        worker = Worker([backend], burst=True, concurrency=40)
        start = time.perf_counter()
        asyncio.run(worker.run())
        drain.append(worker.tasks_done / (time.perf_counter() - start))
    return min(single), min(bulk), statistics.median(drain)
