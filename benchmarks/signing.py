"""What signed payloads (``sign_payloads``) cost: client CPU per ``enqueue()`` and per task of
``enqueue_many()``, and a burst worker's drain rate, with signing off and on.

    .venvs/bench/bin/python benchmarks/signing.py [--tasks 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    from benchmarks.in_process import django_on_private_redis, enqueue_and_drain

    with django_on_private_redis():
        from benchmarks.bench_tasks import noop
        from django.conf import settings

        from redis_tasks.backend import RedisBackend

        for signed in (False, True):
            params = {**settings.TASKS["default"], "sign_payloads": signed}
            backend = RedisBackend("default", params)
            single, bulk, drain = enqueue_and_drain(backend, noop, options.tasks, options.runs)
            state = "on " if signed else "off"
            print(f"signing {state}: enqueue() {single * 1e6:6.1f} us CPU, "
                  f"enqueue_many {bulk * 1e6:5.1f} us CPU a task, "
                  f"drain {drain:7.0f} tasks/s")  # fmt: skip


if __name__ == "__main__":
    main()
