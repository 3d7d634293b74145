"""What signed payloads (``sign_payloads``) cost: client CPU per ``enqueue()`` and per task of
``enqueue_many()``, and a burst worker's drain rate, with signing off and on.

    .venvs/bench/bin/python benchmarks/signing.py [--tasks 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    from redis_tasks.testing import RedisServer

    with RedisServer() as server:
        os.environ["REDIS_TASKS_BENCH_URL"] = server.url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.bench_settings")
        import django

        django.setup()
        from benchmarks.bench_tasks import noop
        from django.conf import settings

        from redis_tasks.backend import RedisBackend
        from redis_tasks.worker import Worker

        n = options.tasks
        for signed in (False, True):
            params = {**settings.TASKS["default"], "sign_payloads": signed}
            backend = RedisBackend("default", params)
            single, bulk, drain = [], [], []
            for _ in range(options.runs):
                start = time.process_time()
                for _ in range(n // 10):
                    backend.enqueue(noop, (), {})
                single.append((time.process_time() - start) / (n // 10))
                start = time.process_time()
                for _ in range(n // 1000):
                    backend.enqueue_many(noop, [((), {})] * 1000)
                bulk.append((time.process_time() - start) / (n // 1000 * 1000))
                worker = Worker([backend], burst=True, concurrency=40)
                start = time.perf_counter()
                asyncio.run(worker.run())
                drain.append(worker.tasks_done / (time.perf_counter() - start))
            state = "on " if signed else "off"
            print(f"signing {state}: enqueue() {statistics.median(single) * 1e6:6.1f} us CPU, "
                  f"enqueue_many {statistics.median(bulk) * 1e6:5.1f} us CPU a task, "
                  f"drain {statistics.median(drain):7.0f} tasks/s")  # fmt: skip


if __name__ == "__main__":
    main()
