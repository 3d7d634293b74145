"""Where the time of many 10 ms tasks goes, wave by wave: one worker, ``--concurrency`` at once.

Why: 500 tasks that sleep 10 ms, 100 at a time, need five 10 ms waves, 50 ms; the worker takes
several times that. A wave is a claim (Redis's claim script for up to 100 tasks and its
reply), starting its tasks on the loop (each one's result built from its hash, handed to a
thread or started as a coroutine), the threads getting the GIL to begin their bodies, the
10 ms, then the finishes; timing each part says which one to cut.

An in-process burst worker (``Worker(burst=True)``, the settings of ``bench_settings.py``, the
framework's per-task log off as in ``compare.py``) has its claim, its thread pool's submit, the
task body and the finish wrapped to note ``time.perf_counter()``. Per wave (one claim of 10 or
more tasks): the claim's round trip, how long the loop took to hand out the wave's tasks, how
long until every body had begun, the spread of their ends, and the time to the next wave's
claim. The server is a private ``redis-server`` on a free port.

    python benchmarks/sleep_waves.py [--tasks 500] [--concurrency 100] [--runs 3] [--kind sync]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from redis_tasks.testing import RedisServer  # noqa: E402

WAVE_SHARE = 0.5  # a claim of at least this share of --concurrency starts a wave


def trace_run(backend: Any, task: Any, tasks: int, concurrency: int) -> tuple[float, list[dict]]:
    """One burst drain of ``tasks`` tasks: its window (ms) and its waves' marks."""
    from redis_tasks import execution, threads
    from redis_tasks.store import TaskStore
    from redis_tasks.worker import Worker

    now = time.perf_counter
    waves: list[dict[str, Any]] = []
    owner: dict[str, dict[str, Any]] = {}  # task id -> its wave
    sent: list[float] = []  # every claim's start
    ends: list[float] = []  # every body's end
    claim, submit, call_sync, run_async = (
        TaskStore.claim, threads.TaskThreads.submit, execution.call_sync, execution.run_async
    )  # fmt: skip

    async def traced_claim(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(now())
        batch = await claim(self, *args, **kwargs)
        if len(batch.claims) >= max(1, concurrency * WAVE_SHARE):
            wave = {"sent": sent[-1], "claimed": now(), "size": len(batch.claims), "handed": [],
                    "begun": [], "ended": []}  # fmt: skip
            waves.append(wave)
            owner.update((c.task_id, wave) for c in batch.claims)
        return batch

    def traced_submit(self: Any, function: Any, *args: Any) -> Any:
        result = args[1] if function is traced_call else None
        if result is not None and result.id in owner:
            owner[result.id]["handed"].append(now())
        return submit(self, function, *args)

    def traced_call(backend: Any, result: Any) -> Any:
        wave = owner.get(result.id)
        if wave is not None:
            wave["begun"].append(now())
        outcome = call_sync(backend, result)
        ends.append(now())
        if wave is not None:
            wave["ended"].append(ends[-1])
        return outcome

    async def traced_async(backend: Any, claim: Any, result: Any, body_done: Any = None) -> Any:
        wave = owner.get(result.id)
        if wave is not None:
            wave["handed"].append(now())
            wave["begun"].append(now())

        def ended() -> None:
            ends.append(now())
            if wave is not None:
                wave["ended"].append(ends[-1])
            if body_done is not None:
                body_done()

        return await run_async(backend, claim, result, ended)

    TaskStore.claim = traced_claim  # type: ignore[method-assign]
    threads.TaskThreads.submit = traced_submit  # type: ignore[method-assign]
    execution.call_sync = traced_call
    execution.run_async = traced_async
    try:
        for start in range(0, tasks, 1000):
            backend.enqueue_many(task, [((), {})] * min(1000, tasks - start))
        runner = Worker([backend], burst=True, concurrency=concurrency)
        asyncio.run(runner.run())
    finally:
        TaskStore.claim = claim  # type: ignore[method-assign]
        threads.TaskThreads.submit = submit  # type: ignore[method-assign]
        execution.call_sync = call_sync
        execution.run_async = run_async
    if runner.tasks_done != tasks:
        raise RuntimeError(f"the worker ran {runner.tasks_done} of {tasks} tasks")
    # As compare.py counts it: from the first claim to the last body's end (its finish is a
    # round trip more); start-up and the burst worker's last look are left out.
    window = (max(ends) - sent[0]) * 1000
    return window, waves


def phases(waves: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per wave, ms: the claim's trip, handing out its tasks, until every body had begun,
    the bodies (first begun to last ended), and from its last end to the next wave's claim."""
    out: dict[str, list[float]] = {k: [] for k in PHASES}
    for i, wave in enumerate(waves):
        if not wave["handed"] or len(wave["begun"]) < wave["size"]:
            continue
        ms = 1000
        out["claim round trip"].append((wave["claimed"] - wave["sent"]) * ms)
        out["claimed -> last task handed out"].append((max(wave["handed"]) - wave["claimed"]) * ms)
        out["last handed -> last body begun"].append(
            max(0.0, max(wave["begun"]) - max(wave["handed"])) * ms
        )
        if wave["ended"]:
            out["first body begun -> last ended"].append(
                (max(wave["ended"]) - min(wave["begun"])) * ms
            )
            if i + 1 < len(waves):
                out["last ended -> next wave claimed"].append(
                    (waves[i + 1]["claimed"] - max(wave["ended"])) * ms
                )
    return out


PHASES = [
    "claim round trip",
    "claimed -> last task handed out",
    "last handed -> last body begun",
    "first body begun -> last ended",
    "last ended -> next wave claimed",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kind", choices=["sync", "async"], default="sync")
    options = parser.parse_args()
    server = RedisServer(None, None).start()
    try:
        os.environ["REDIS_TASKS_BENCH_URL"] = server.url
        os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
        os.environ.setdefault("REDIS_TASKS_BENCH_TASK_LOG", "WARNING")
        import django

        django.setup()
        import redis
        from benchmarks.compare_tasks import asleep10, sleep10

        from redis_tasks.compat import task_backends

        backend = task_backends["default"]
        task = sleep10 if options.kind == "sync" else asleep10
        client = redis.Redis.from_url(f"{server.url}/0")
        trace_run(backend, task, 50, options.concurrency)  # imports, connections, threads
        walls: list[float] = []
        first: list[dict[str, list[float]]] = []
        merged: dict[str, list[float]] = {k: [] for k in PHASES}
        for _ in range(options.runs):
            client.flushdb()
            wall, waves = trace_run(backend, task, options.tasks, options.concurrency)
            walls.append(wall)
            first.append(phases(waves[:2]))
            for key, values in phases(waves).items():
                merged[key].extend(values)
            print(f"  run: {wall:.0f} ms, {len(waves)} waves", file=sys.stderr, flush=True)
        print(
            f"{options.tasks} x 10 ms {options.kind} tasks, --concurrency {options.concurrency}, "
            f"{options.runs} runs: first claim -> last body ended, p50 "
            f"{statistics.median(walls):.0f} ms (the sleeps alone: "
            f"{options.tasks / options.concurrency * 10:.0f} ms)"
        )
        print(f"waves: claims of >= {WAVE_SHARE:.0%} of --concurrency; ms")
        print(f"{'':34s} {'first wave, p50':>15s} {'all waves, p50':>15s} {'max':>6s} waves")
        for key in PHASES:
            values = merged[key]
            firsts = [run[key][0] for run in first if run[key]]
            if values:
                head = f"{statistics.median(firsts):15.1f}" if firsts else f"{'':15s}"
                print(f"{key:34s} {head} {statistics.median(values):15.1f} "
                      f"{max(values):6.1f} {len(values):6d}")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
