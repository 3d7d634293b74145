"""Where an idle worker's latency goes, hop by hop: one no-op sync task at a time.

Why: the enqueue -> finished latency of an idle worker is several process wake-ups in a row
(the client's script, the worker's wait, its claim unless the task was handed to it at
enqueue, the task's thread, the finish, the client's next poll). Timing each hop says which
one to cut; ``floor.py`` says what a single wake-up through Redis costs on the machine.

A worker subprocess (``Worker(concurrency=10)``, the settings of ``bench_settings.py``) has its
store's wait, claim and finish, and the task body, wrapped to note ``time.perf_counter()`` (one
clock for every process on a host); the client notes the enqueue call and when
``get_result()`` first shows the task finished (polled every ``--poll`` seconds, as
``compare.py`` polls). The wrappers cost a few microseconds a hop. The server is a private
``redis-server`` on a free port. ``--source=DIR`` traces another source tree (a checkout of an
older commit, for a before and after).

    python benchmarks/idle_trace.py [--samples 300] [--poll 0.0002] [--source=DIR]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

ROOT = Path(__file__).resolve().parent.parent
SOURCE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--source=")), str(ROOT))
sys.path[:0] = [str(Path(SOURCE) / "src"), str(ROOT)]

from redis_tasks.testing import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from redis_tasks.backend import RedisBackend

HOPS = [
    ("enqueue() call", "enqueue", "enqueued"),
    ("enqueue() start -> worker woken", "enqueue", "woken"),
    ("woken -> claim sent", "woken", "claim_start"),
    ("claim round trip", "claim_start", "claimed"),
    ("claimed -> body starts (thread)", "claimed", "body_start"),
    ("handed over: woken -> body starts (thread)", "handed", "body_start"),
    ("body (task_started, the no-op)", "body_start", "body_end"),
    ("body ends -> finish sent", "body_end", "finish_start"),
    ("finish round trip", "finish_start", "finished"),
    ("finished -> client sees it", "finished", "seen"),
    ("total", "enqueue", "seen"),
]


def setup(url: str) -> None:
    os.environ["REDIS_TASKS_BENCH_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
    import django

    django.setup()


def worker(url: str, out: str) -> None:
    """The traced worker: runs until SIGTERM, then writes its marks to ``out``."""
    import asyncio

    setup(url)
    from redis_tasks import execution
    from redis_tasks.compat import task_backends
    from redis_tasks.store import TaskStore
    from redis_tasks.worker import Worker

    marks: list[tuple[str, str | None, float]] = []
    now = time.perf_counter
    wait, claim, afinish = TaskStore.wait_for_work, TaskStore.claim, TaskStore.afinish
    call_sync = execution.call_sync

    async def traced_wait(self: Any, *args: Any) -> Any:
        handed = await wait(self, *args)
        at = now()
        if handed is not None:  # a task handed over at enqueue, leased already
            marks.append(("handed", handed.task_id, at))
        marks.append(("woken", None, at))
        return handed

    async def traced_claim(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = now()
        batch = await claim(self, *args, **kwargs)
        end = now()
        for c in batch.claims:
            marks.extend([("claim_start", c.task_id, start), ("claimed", c.task_id, end)])
        return batch

    async def traced_afinish(self: Any, c: Any, *args: Any) -> int:
        marks.append(("finish_start", c.task_id, now()))
        done = await afinish(self, c, *args)
        marks.append(("finished", c.task_id, now()))
        return done

    def traced_call(backend: Any, claim: Any, *args: Any) -> Any:
        marks.append(("body_start", claim.task_id, now()))
        outcome = call_sync(backend, claim, *args)
        marks.append(("body_end", claim.task_id, now()))
        return outcome

    # The wrappers take any signature: the tree traced may be an older one.
    TaskStore.wait_for_work = traced_wait  # type: ignore[method-assign,assignment]
    TaskStore.claim = traced_claim  # type: ignore[method-assign]
    TaskStore.afinish = traced_afinish  # type: ignore[method-assign,assignment]
    execution.call_sync = traced_call  # type: ignore[assignment]
    runner = Worker([cast("RedisBackend", task_backends["default"])], concurrency=10)
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    try:
        asyncio.run(runner.run())
    finally:
        Path(out).write_text(json.dumps(marks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.0002, help="seconds between polls")
    parser.add_argument("--source", help="the source tree to trace (default: this one)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(*options.worker)
        return
    server = RedisServer(None, None).start()
    out = str(Path(tempfile.mkdtemp(prefix="idle-trace-")) / "marks.json")
    try:
        setup(server.url)
        from benchmarks.bench_tasks import noop

        from redis_tasks.compat import task_backends

        backend = cast("RedisBackend", task_backends["default"])
        child = subprocess.Popen(
            [sys.executable, __file__, f"--source={SOURCE}", "--worker", server.url, out]
        )

        def seen(result_id: str) -> float:
            while not backend.get_result(result_id).is_finished:
                time.sleep(options.poll)
            return time.perf_counter()

        client = backend.store.connections.sync
        while int(client.info("clients")["blocked_clients"]) < 1:  # the worker is waiting
            time.sleep(0.05)
        seen(noop.enqueue().id)
        calls: dict[str, tuple[float, float, float]] = {}
        for _ in range(options.samples):
            time.sleep(0.002)  # idle again, as compare.py leaves it
            start = time.perf_counter()
            result_id = noop.enqueue().id
            enqueued = time.perf_counter()
            calls[result_id] = (start, enqueued, seen(result_id))
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        marks = json.loads(Path(out).read_text())
    finally:
        server.stop()
        Path(out).unlink(missing_ok=True)
        Path(out).parent.rmdir()
    report(calls, marks)


def report(calls: dict[str, tuple[float, float, float]], marks: list[Any]) -> None:
    per_task: dict[str, dict[str, float]] = defaultdict(dict)
    woken = sorted(t for name, _, t in marks if name == "woken")
    for name, task_id, t in marks:
        if task_id:
            per_task[task_id][name] = t
    hops: dict[str, list[float]] = defaultdict(list)
    for task_id, (start, enqueued, seen_at) in calls.items():
        times = {**per_task.get(task_id, {}), "enqueue": start, "enqueued": enqueued}
        times["seen"] = seen_at
        if "finished" not in times or ("claim_start" not in times and "handed" not in times):
            continue
        i = bisect.bisect_right(woken, times.get("handed", times.get("claim_start", 0))) - 1
        if i >= 0 and woken[i] > start:  # the wake-up this task's claim followed
            times["woken"] = woken[i]
        for label, begin, end in HOPS:
            if begin in times and end in times:
                hops[label].append((times[end] - times[begin]) * 1000)
    handed = sum("handed" in per_task.get(task_id, {}) for task_id in calls)
    print(
        f"{len(calls)} tasks, one at a time ({handed} handed over at enqueue); "
        "ms per hop (p50, p90)\n"
    )
    print("| hop | p50 | p90 |\n|---|---|---|")
    for label, _, _ in HOPS:
        values = sorted(hops[label])
        if values:
            p50, p90 = values[len(values) // 2], values[int(len(values) * 0.9)]
            print(f"| {label} | {p50:.3f} | {p90:.3f} |")


if __name__ == "__main__":
    main()
