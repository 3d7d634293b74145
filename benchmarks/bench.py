"""Throughput and latency of django-redis-tasks on a private local Redis.

Why: the backend does one Lua script per state change and the worker claims in batches; these
figures show what that costs end to end (Python, redis-py, Redis) and catch regressions. Every
figure is the median of several runs on a fresh Redis database, so that a single noisy run does
not move it.

Measured (no-op tasks, so the backend and the worker are what is timed):

1. enqueue rate: ``task.enqueue()`` calls per second from one process (one thread); beside it
   the bulk rate of ``backend.enqueue_many(task, calls)`` (one script call per batch) and the
   ratio of the two, from runs taken in pairs.
2. drain rate: tasks per second run by one in-process burst worker
   (``Worker(..., burst=True)`` under ``asyncio.run``) on a queue filled beforehand; sync tasks
   (run in the worker's thread pool) and async tasks (run on its event loop) separately.
3. latency with an idle worker (``python -m django redis_tasks_worker`` in a subprocess), one
   task at a time:
   - enqueue -> started_at: from Redis ``TIME`` read just before ``enqueue()`` to the task's
     ``started_at``, both on the Redis server clock. ``started_at`` has 1 ms resolution, so the
     middle of its millisecond is used (+0.5 ms); a sample is exact to +-0.5 ms.
   - enqueue -> finished seen: client wall clock from just before ``enqueue()`` until
     ``get_result()`` first reports the task finished (polled every ~0.2 ms).
4. deferral lateness (``run_after`` precision), with the same worker subprocess: tasks enqueued
   with ``run_after`` spread 50-1500 ms ahead; per task ``started_at - run_after`` in whole ms
   (``run_after`` as stored from the client's clock, ``started_at`` from the Redis clock; the same
   host clock here). Once with the worker idle, once while it drains a backlog of no-op tasks of
   the same priority queued before them (a due deferred task goes to the front of its priority).

Run from the repository root::

    python benchmarks/bench.py            # full run (5 runs per figure)
    python benchmarks/bench.py --quick    # smoke run
    python benchmarks/bench.py --profile  # cProfile of the enqueue and drain paths

The script starts its own ``redis-server`` on a free port in a temp dir (never the shared one on
6379) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import django  # noqa: E402
import redis  # noqa: E402

from redis_tasks.testing import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from redis_tasks.backend import RedisBackend
    from redis_tasks.worker import Worker

SETTINGS = "benchmarks.bench_settings"
URL_VARIABLE = "REDIS_TASKS_BENCH_URL"
POLL_INTERVAL = 0.0002  # seconds between get_result() polls in the latency measure
IDLE_GAP = 0.002  # seconds between latency samples, so the worker is back to waiting
DEFER_MIN_MS = 50  # the nearest run_after of the deferral measure, ms after its enqueue
DEFER_POLL = 0.01  # seconds between checks that every deferred task has started
DEFER_TIMEOUT = 30.0  # seconds past the last due time before a deferral run gives up


@dataclass(frozen=True)
class Figure:
    """One reported figure: its per-run values and how to show them."""

    label: str
    unit: str
    values: list[float]
    decimals: int = 0

    def cell(self, value: float) -> str:
        return f"{value:,.{self.decimals}f}"

    def row(self) -> list[str]:
        return [
            self.label,
            self.cell(statistics.median(self.values)),
            self.cell(min(self.values)),
            self.cell(max(self.values)),
            self.unit,
        ]


@dataclass(frozen=True)
class Config:
    runs: int
    tasks: int
    samples: int
    concurrency: int
    bulk: int  # tasks per bulk enqueue run
    batch: int  # calls per enqueue_many()
    deferred: int  # deferred tasks per deferral run
    defer_max_ms: int  # the farthest run_after, ms ahead
    backlog: int  # no-op tasks queued before the deferred ones in the busy case


class Bench:
    """The measures, against the ``default`` backend of ``bench_settings``."""

    def __init__(self, url: str, config: Config) -> None:
        from benchmarks import bench_tasks

        from redis_tasks.backend import redis_backends  # after django.setup()

        self.url = url
        self.config = config
        self.backend: RedisBackend = redis_backends(["default"])[0]
        self.noop = bench_tasks.noop
        self.anoop = bench_tasks.anoop
        self.redis = redis.Redis.from_url(f"{url}/0")

    def fresh(self) -> None:
        self.redis.flushdb()

    def enqueue_loop(self, task: Any, count: int) -> None:
        for _ in range(count):
            task.enqueue()

    def enqueue_bulk(self, task: Any, count: int) -> None:
        """``count`` calls in ``enqueue_many()`` batches of ``config.batch``."""
        calls = [((), {})] * self.config.batch
        for start in range(0, count, self.config.batch):
            self.backend.enqueue_many(task, calls[: count - start])

    def burst(self) -> Worker:
        from redis_tasks.worker import Worker  # after django.setup()

        worker = Worker([self.backend], burst=True, concurrency=self.config.concurrency)
        asyncio.run(worker.run())
        return worker

    def warm_up(self) -> None:
        """Import and connect everything once, outside any timing."""
        self.fresh()
        self.enqueue_loop(self.noop, 50)
        self.enqueue_loop(self.anoop, 50)
        self.enqueue_bulk(self.noop, 50)
        self.burst()
        self.fresh()

    # --- 1. enqueue -----------------------------------------------------------------------

    def enqueue_rate(self) -> float:
        self.fresh()
        n = self.config.tasks
        start = time.perf_counter()
        self.enqueue_loop(self.noop, n)
        return n / (time.perf_counter() - start)

    def bulk_rate(self) -> float:
        self.fresh()
        n = self.config.bulk
        start = time.perf_counter()
        self.enqueue_bulk(self.noop, n)
        return n / (time.perf_counter() - start)

    # --- 2. drain -------------------------------------------------------------------------

    def drain_rate(self, task: Any) -> float:
        self.fresh()
        n = self.config.tasks
        self.enqueue_loop(task, n)
        start = time.perf_counter()
        worker = self.burst()
        elapsed = time.perf_counter() - start
        if worker.tasks_done != n:
            raise RuntimeError(f"the burst worker ran {worker.tasks_done} of {n} tasks")
        return n / elapsed

    # --- 3. latency -----------------------------------------------------------------------

    @contextmanager
    def worker_process(self) -> Iterator[None]:
        """A ``redis_tasks_worker`` subprocess, idle once a first task has run through it."""
        env = {
            **os.environ,
            URL_VARIABLE: self.url,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        command = [
            sys.executable,
            "-m",
            "django",
            "redis_tasks_worker",
            "-v",
            "0",
            "--concurrency",
            str(self.config.concurrency),
        ]
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
            try:
                self.fresh()
                self.wait_finished(self.noop.enqueue().id, timeout=30)
                yield
            except BaseException:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))
                raise
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def wait_finished(self, result_id: str, timeout: float = 10.0) -> Any:
        deadline = time.perf_counter() + timeout
        while True:
            result = self.backend.get_result(result_id)
            if result.is_finished:
                if result.status != "SUCCESSFUL":
                    raise RuntimeError(f"task {result_id} ended {result.status}: {result.errors}")
                return result
            if time.perf_counter() > deadline:
                raise RuntimeError(f"task {result_id} did not finish within {timeout}s")
            time.sleep(POLL_INTERVAL)

    def latency_run(self) -> tuple[list[float], list[float]]:
        """Per sample: (enqueue -> started_at on the Redis clock, enqueue -> finished seen), ms."""
        self.fresh()
        to_start, to_seen = [], []
        for _ in range(self.config.samples):
            seconds, micros = self.redis.time()
            before_ms = seconds * 1000 + micros / 1000
            before = time.perf_counter()
            result_id = self.noop.enqueue().id
            result = self.wait_finished(result_id)
            seen = time.perf_counter()
            started_ms = round(result.started_at.timestamp() * 1000) + 0.5
            to_start.append(started_ms - before_ms)
            to_seen.append((seen - before) * 1000)
            time.sleep(IDLE_GAP)
        return to_start, to_seen

    # --- 4. deferral lateness -------------------------------------------------------------

    def deferral_run(self, backlog: int) -> tuple[list[int], int]:
        """Per deferred task: ``started_at - run_after`` in ms. And how many backlog tasks were
        still queued once every deferred task had started (the worker was busy until then)."""
        from django.utils import timezone  # after django.setup()

        self.fresh()
        c, keys = self.config, self.backend.store.keys
        if backlog:
            self.enqueue_bulk(self.noop, backlog)
        span = c.defer_max_ms - DEFER_MIN_MS
        offsets = [DEFER_MIN_MS + span * i / max(c.deferred - 1, 1) for i in range(c.deferred)]
        random.Random(c.deferred).shuffle(offsets)  # enqueue order says nothing of due order
        task_keys = []
        for offset in offsets:
            task = self.noop.using(run_after=timezone.now() + timedelta(milliseconds=offset))
            task_keys.append(keys.task(task.enqueue().id))
        time.sleep(c.defer_max_ms / 1000)  # the last one is due by now
        deadline = time.perf_counter() + DEFER_TIMEOUT
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for key in task_keys:
                pipe.hmget(key, "enqueued_at", "run_after", "started_at")
            rows = pipe.execute()
            waiting = sum(started is None for _, _, started in rows)
            if not waiting:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"{waiting} of {c.deferred} deferred tasks had not started "
                    f"{DEFER_TIMEOUT:.0f} s after the last was due"
                )
            time.sleep(DEFER_POLL)
        left = int(self.redis.zcard(keys.ready(self.noop.queue_name)))
        # run_after is stored in µs (as the caller gave it), the other times in ms; the claim
        # compares its ms, floored, with the Redis clock.
        rows = [
            (int(enqueued), int(run_after) // 1000, int(started))
            for enqueued, run_after, started in rows
        ]
        early = sum(run_after <= enqueued for enqueued, run_after, _ in rows)
        if early:  # enqueued as ready, not deferred: not what is measured here
            raise RuntimeError(f"{early} deferred tasks were already due when enqueued")
        if backlog:
            self.drop_backlog()
        return [started - run_after for _, run_after, started in rows], left

    def drop_backlog(self) -> None:
        """Delete the backlog still queued and wait for the tasks running to finish."""
        keys = self.backend.store.keys
        self.redis.delete(keys.ready(self.noop.queue_name))
        deadline = time.perf_counter() + 10
        while self.redis.zcard(keys.running):
            if time.perf_counter() > deadline:
                raise RuntimeError("the worker did not finish its running tasks within 10 s")
            time.sleep(0.001)


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def measure(runs: int, label: str, unit: str, one: Callable[[], float]) -> Figure:
    print(f"  {label} ...", end="", flush=True, file=sys.stderr)
    values = [one() for _ in range(runs)]
    print(" " + ", ".join(f"{v:,.0f}" for v in values), file=sys.stderr)
    return Figure(label, unit, values)


def enqueue_figures(bench: Bench) -> list[Figure]:
    """Loop and bulk enqueue, one run of each in turn, so each ratio compares close runs."""
    loop, bulk = [], []
    print("  enqueue rate (1), loop / bulk ...", end="", flush=True, file=sys.stderr)
    for _ in range(bench.config.runs):
        loop.append(bench.enqueue_rate())
        bulk.append(bench.bulk_rate())
        print(f" {loop[-1]:,.0f} / {bulk[-1]:,.0f}", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return [
        Figure("enqueue rate, task.enqueue() loop (1)", "tasks/s", loop),
        Figure("enqueue rate, backend.enqueue_many() (1b)", "tasks/s", bulk),
        Figure(
            "bulk / loop enqueue rate (1b)",
            "x",
            [b / n for b, n in zip(bulk, loop, strict=True)],
            decimals=1,
        ),
    ]


def run_all(bench: Bench) -> list[Figure]:
    c = bench.config
    figures = [
        *enqueue_figures(bench),
        measure(
            c.runs, "drain rate, sync tasks (2)", "tasks/s", lambda: bench.drain_rate(bench.noop)
        ),
        measure(
            c.runs, "drain rate, async tasks (2)", "tasks/s", lambda: bench.drain_rate(bench.anoop)
        ),
    ]
    runs: list[tuple[list[float], list[float]]] = []
    deferral: dict[str, list[tuple[list[int], int]]] = {"idle": [], "busy": []}
    with bench.worker_process():
        print(f"  latency, {c.runs} runs ", end="", flush=True, file=sys.stderr)
        for _ in range(c.runs):
            runs.append(bench.latency_run())
            print(".", end="", flush=True, file=sys.stderr)
        print(file=sys.stderr)
        for case, backlog in (("idle", 0), ("busy", c.backlog)):
            print(f"  deferral lateness, {case} worker ...", end="", flush=True, file=sys.stderr)
            for _ in range(c.runs):
                late, left = bench.deferral_run(backlog)
                deferral[case].append((late, left))
                p50, p99 = percentile(late, 50), percentile(late, 99)
                print(f" {p50:.1f}/{p99:.1f}/{max(late)}", end="", flush=True, file=sys.stderr)
                if backlog:
                    print(f" ({left:,} left)", end="", flush=True, file=sys.stderr)
            print(file=sys.stderr)
    for index, name in ((0, "enqueue -> started_at (3a)"), (1, "enqueue -> finished seen (3b)")):
        for pct in (50, 99):
            figures.append(
                Figure(
                    f"latency p{pct} {name}",
                    "ms",
                    [percentile(run[index], pct) for run in runs],
                    decimals=2,
                )
            )
    for case, mark in (("idle", "4a"), ("busy", "4b")):
        for pct in (50, 99):
            figures.append(
                Figure(
                    f"deferral lateness p{pct}, {case} worker ({mark})",
                    "ms",
                    [percentile(late, pct) for late, _ in deferral[case]],
                    decimals=1,
                )
            )
        figures.append(
            Figure(
                f"deferral lateness max, {case} worker ({mark})",
                "ms",
                [float(max(late)) for late, _ in deferral[case]],
            )
        )
    figures.append(
        Figure(
            "backlog still queued at the end (4b)",
            "tasks",
            [float(left) for _, left in deferral["busy"]],
        )
    )
    return figures


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)),
            row[-1],
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notes(c: Config) -> str:
    return f"""
(1) task.enqueue() of a no-op task, {c.tasks:,} calls in a row from one thread.
(1b) backend.enqueue_many(noop, [((), {{}})] * {c.batch:,}) (one script call each), {c.bulk:,}
    tasks in all from one thread; ratio: bulk rate / loop rate of runs taken in turn.
(2) {c.tasks:,} no-op tasks queued first, then one in-process burst worker
    (Worker(burst=True, concurrency={c.concurrency}) under asyncio.run) timed from start to exit;
    sync tasks run in its thread pool, async tasks on its event loop.
(3) One task at a time ({c.samples} samples a run) to an idle `redis_tasks_worker`
    subprocess (--concurrency {c.concurrency}); p50 and p99 of each run, median over runs.
    (3a) Redis TIME read just before enqueue() -> the task's started_at, both on the Redis
         server clock; started_at has 1 ms resolution, so +-0.5 ms per sample.
    (3b) client wall clock from just before enqueue() until get_result() first reports the
         task SUCCESSFUL (polled every {POLL_INTERVAL * 1000:.1f} ms): includes running the task,
         storing its outcome and the poll delay.
(4) With the same worker subprocess: {c.deferred} tasks enqueued one by one, each with
    run_after {DEFER_MIN_MS}-{c.defer_max_ms:,} ms ahead (evenly spread, shuffled). Lateness per
    task = started_at - run_after, whole ms (run_after from the client's clock, truncated;
    started_at from Redis TIME, floored; one host clock), so +-1 ms per sample. p50, p99 and
    max of each run, median over runs.
    (4a) the worker idle in between (blocked on its wake list until the next due time).
    (4b) {c.backlog:,} no-op tasks of the same priority enqueued first (enqueue_many) while the
         worker runs; "backlog still queued" counts those not yet started once every deferred
         task had started (> 0: the worker was busy throughout); the rest is then deleted."""


def environment(server: RedisServer) -> str:
    from redis_tasks.compat import FRAMEWORK

    try:
        import hiredis

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "no hiredis"
    client = redis.Redis.from_url(server.url)
    info = client.info("server")
    hz = client.config_get("hz")["hz"]
    if "valkey_version" in info:
        server_name = f"Valkey {info['valkey_version']}"
    else:
        server_name = f"Redis {info['redis_version']}"
    return (
        f"django-redis-tasks on Django {django.get_version()} ({FRAMEWORK}), "
        f"Python {platform.python_version()}, redis-py {redis.__version__} ({parser}), "
        f"{server_name} (hz {hz}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} before the run"
    )


def profile(bench: Bench, top: int) -> None:
    """cProfile the enqueue path, then the drain path for async and for sync no-op tasks.

    Async tasks run wholly on the worker's event loop thread. Sync tasks run in its thread pool:
    Python 3.12+ cProfile (built on sys.monitoring) sees those threads too, but older Pythons
    see only the calling thread. With threads interleaving, "tottime" stays exact while
    cumulative times are approximate.
    """
    n = bench.config.tasks

    def show(title: str, profiler: cProfile.Profile) -> None:
        print(f"\n=== {title} ({n:,} tasks) ===")
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)

    bench.fresh()
    profiler = cProfile.Profile()
    profiler.runcall(bench.enqueue_loop, bench.noop, n)
    show("enqueue path: task.enqueue()", profiler)

    bench.fresh()
    profiler = cProfile.Profile()
    profiler.runcall(bench.enqueue_bulk, bench.noop, n)
    show(f"bulk enqueue path: backend.enqueue_many(), {bench.config.batch:,} a call", profiler)

    for title, task in (
        ("drain path: async no-op", bench.anoop),
        ("drain path: sync no-op", bench.noop),
    ):
        bench.fresh()
        bench.enqueue_loop(task, n)
        profiler = cProfile.Profile()
        profiler.runcall(bench.burst)
        show(title, profiler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; quick: 3)")
    parser.add_argument("--tasks", type=int, help="tasks per rate run (default 5000; quick: 500)")
    parser.add_argument("--samples", type=int, help="latency samples per run (300; quick: 50)")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency (10)")
    parser.add_argument("--bulk", type=int, help="tasks per bulk enqueue run (10000; quick: 2000)")
    parser.add_argument("--batch", type=int, default=1000, help="calls per enqueue_many() (1000)")
    parser.add_argument("--deferred", type=int, help="deferred tasks per run (200; quick: 50)")
    parser.add_argument(
        "--defer-max-ms", type=int, help="farthest run_after, ms ahead (1500; quick: 500)"
    )
    parser.add_argument("--backlog", type=int, help="busy-case backlog (20000; quick: 3000)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print cProfile statistics of the enqueue and drain paths instead",
    )
    parser.add_argument("--top", type=int, default=20, help="rows per profile listing (20)")
    parser.add_argument(
        "--redis-hz",
        type=int,
        help="start redis-server with --hz N (default: the server's own, 10): how often it "
        "times out blocked clients, which bounds the idle deferral lateness (4a)",
    )
    args = parser.parse_args()
    config = Config(
        runs=args.runs or (3 if args.quick else 5),
        tasks=args.tasks or (500 if args.quick else 5000),
        samples=args.samples or (50 if args.quick else 300),
        concurrency=args.concurrency,
        bulk=args.bulk or (2000 if args.quick else 10_000),
        batch=args.batch,
        deferred=args.deferred or (50 if args.quick else 200),
        defer_max_ms=args.defer_max_ms or (500 if args.quick else 1500),
        backlog=args.backlog or (3000 if args.quick else 20_000),
    )

    extra = ("--hz", str(args.redis_hz)) if args.redis_hz else ()
    server = RedisServer(None, None, *extra).start()
    try:
        os.environ[URL_VARIABLE] = server.url
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        django.setup()
        bench = Bench(server.url, config)
        header = environment(server)
        bench.warm_up()
        if args.profile:
            profile(bench, args.top)
            return
        started = time.perf_counter()
        figures = run_all(bench)
        elapsed = time.perf_counter() - started
        print(header)
        print(
            f"Each figure: median of {config.runs} runs (min and max of the runs beside it); "
            f"fresh Redis DB per run; {elapsed:.0f} s in all; "
            f"load average {os.getloadavg()[0]:.2f} after.\n"
        )
        print(table([["measure", "median", "min", "max", "unit"], *(f.row() for f in figures)]))
        print(notes(config))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
