"""threadmill's published throughput method, taken for threadmill and for this backend alike.

threadmill's README advertises 9,215 tasks/s on one worker process with the GIL and 19,954 on
free-threaded Python 3.14t, by its method: one worker process with 4 threads and a 128-task
prefetch, 120,000 echo tasks queued first, rate = tasks / (drain time - worker start). Its
figures are answered here on that method, not on ours (``compare.py`` takes the drain from the
tasks' stored times, with 4,000 no-op tasks). The setups take turns, a run each (the machine
is shared: a change of load falls on all alike). A run of a setup:

1. an emptied private Redis gets ``--tasks`` calls of ``echo(i)``: ours through
   ``backend.enqueue_many()``, 1,000 a call; threadmill has no bulk API, so its
   ``enqueue()`` loop (queueing is not timed);
2. ONE worker process is launched, in a mode that exits once the queue is empty:
   ``threadmill worker --workers 1 --threads 4 --prefetch-count 128 --exit-empty`` (its own
   flags, no tuning) and ``redis_tasks_worker --burst --concurrency 4`` (its thread count),
   the same with ``--prefetch 124`` (its 128 tasks in hand) and ``--concurrency 40`` (our
   drains' setting);
3. once it has exited, the results are read back through ``get_result()``: the first and last
   2,000 tasks and 1,000 drawn from the rest, every one SUCCESSFUL with its own argument back.

Two rates per run, median over the runs: **method** = tasks / (last finish - first start),
the worker's start being its first task's stored start (its start-up left out, as in the
published method), and **wall** = tasks / (last finish - launch of the worker process), its
start-up (interpreter, Django, connecting) in. Each setup runs in a child process of its own
(Django settings are per process) on one interpreter for both systems, ``.venvs/bench314``
(threadmill needs 3.14) unless ``--python`` names another (``--systems ours4,ours40`` on
``.venvs/bench`` gives our 3.13 figures). The child reports whether the GIL is on after
importing every dependency (``sys._is_gil_enabled()``), which matters on a free-threaded build.

    .venvs/bench/bin/python benchmarks/own_method.py                 # 120,000 tasks, 3 runs
    .venvs/bench/bin/python benchmarks/own_method.py --tasks 20000 --runs 1    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

EDGE = 2000  # tasks read back at each end of the queue (the first start, the last finish)
SAMPLE = 1000  # tasks read back from the rest
DRAIN_TIMEOUT = 900.0  # seconds a worker gets to empty the queue


@dataclass(frozen=True)
class Setup:
    """One worker, as the method runs it."""

    key: str
    system: str  # a key of benchmarks.systems.SYSTEMS
    options: dict[str, Any] = field(default_factory=dict)


SETUPS = {
    s.key: s
    for s in (
        Setup(
            "threadmill",
            "threadmill",
            {"concurrency": 4, "prefetch": 128, "burst": True, "tuned": False},
        ),
        Setup("ours4", "redis_tasks", {"concurrency": 4, "burst": True}),
        Setup("ours4p", "redis_tasks", {"concurrency": 4, "prefetch": 124, "burst": True}),
        Setup("ours40", "redis_tasks", {"concurrency": 40, "burst": True}),
    )
}


def gil_state() -> dict[str, Any]:
    """Whether this is a free-threaded build, and whether the GIL is on now that the backend,
    redis-py (and hiredis, if installed) and the system under test are imported."""
    enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": bool(enabled),
    }


def queue_echoes(system: Any, count: int) -> list[str]:
    """``count`` calls of ``echo(i)``, the fastest public way each system has."""
    from benchmarks.compare_tasks import echo
    from benchmarks.systems import RedisTasks

    if isinstance(system, RedisTasks):
        ids: list[str] = []
        for start in range(0, count, 1000):
            calls: list[tuple[Any, Any]] = [
                ((i,), {}) for i in range(start, min(start + 1000, count))
            ]
            ids.extend(r.id for r in system.backend.enqueue_many(echo, calls))
        return ids
    return [echo.enqueue(i).id for i in range(count)]


def read_back(system: Any, ids: list[str]) -> tuple[datetime, datetime]:
    """Check the ends and a sample of the rest: each SUCCESSFUL, its argument returned. The
    first start and the last finish (claims are FIFO, so both lie in the ends)."""
    from benchmarks.compare_tasks import echo

    picked = set(range(min(EDGE, len(ids)))) | set(range(max(0, len(ids) - EDGE), len(ids)))
    rest = [i for i in range(EDGE, len(ids) - EDGE)]
    picked |= set(random.sample(rest, min(SAMPLE, len(rest))))
    starts, ends = [], []
    for index in sorted(picked):
        result = system.result(echo, ids[index])
        if result.status != "SUCCESSFUL" or result.return_value != index:
            raise RuntimeError(f"task {index} ended {result.status}, not SUCCESSFUL({index})")
        starts.append(result.started_at)
        ends.append(result.finished_at)
    return min(starts), max(ends)


def one_run(system: Any, setup: Setup, count: int) -> dict[str, float]:
    system.flush()
    ids = queue_echoes(system, count)
    (command,) = system.worker_commands(1, setup.options)
    with tempfile.TemporaryFile() as log:
        launch = time.time()
        process = system.spawn(command, log)
        try:
            code = process.wait(DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            system.stop_workers([process], 1)
            code = -1
        exited = time.time()
        if code != 0:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise RuntimeError(f"{setup.key}: the worker exited {code}")
    if system.forks:
        system.stop_workers([process], 1)  # the pool's children, should one be left
    first, last = read_back(system, ids)
    start, finish = first.timestamp(), last.timestamp()
    return {
        "method": count / (finish - start),
        "wall": count / (finish - launch),
        "startup": start - launch,
        "exit_after": exited - finish,
    }


def child(key: str, count: int, runs: int) -> None:
    """Runs of one setup in this process (its settings); JSON on stdout."""
    from benchmarks.systems import SYSTEMS

    setup = SETUPS[key]
    system = SYSTEMS[setup.system]()
    system.start()
    try:
        import django

        django.setup()
        system.setup()
        import redis

        import redis_tasks  # noqa: F401  (the GIL check counts every dependency imported)

        document: dict[str, Any] = {
            "command": "python -m django " + " ".join(system.worker_commands(1, setup.options)[0]),
            "version": f"{system.label} {system.version()}",
            "python": sys.version.split()[0]
            + (" free-threaded" if gil_state()["free_threaded_build"] else ""),
            "redis_py": redis.__version__,
            "runs": [],
        }
        for _ in range(runs):
            document["runs"].append(one_run(system, setup, count))
            run = document["runs"][-1]
            print(
                f"  {key}: method {run['method']:,.0f} tasks/s, wall {run['wall']:,.0f}, "
                f"start-up {run['startup']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        document.update(gil_state())
        print(json.dumps(document))
    finally:
        system.stop()


def summary(values: list[float], digits: int = 0) -> str:
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=120_000, help="echo tasks a run (120,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per setup (3)")
    parser.add_argument("--systems", default=",".join(SETUPS), help="of " + ", ".join(SETUPS))
    parser.add_argument(
        "--python",
        default=os.environ.get("REDIS_TASKS_BENCH_PYTHON314")
        or str(ROOT / ".venvs/bench314/bin/python"),
        help="the interpreter of every setup (default .venvs/bench314's)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tasks, args.runs)
        return
    load = os.getloadavg()[0]
    # The setups take turns, one run each, so that a change in the machine's load (it is
    # shared) falls on every setup alike.
    docs: dict[str, dict[str, Any]] = {}
    for run in range(args.runs):
        for key in args.systems.split(","):
            print(f"== {key}, run {run + 1} of {args.runs}", file=sys.stderr, flush=True)
            command = [args.python, str(HERE / "own_method.py"), "--child", key]
            command += ["--tasks", str(args.tasks), "--runs", "1"]
            out = subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            docs.setdefault(key, {**doc, "runs": []})["runs"] += doc["runs"]
    rows = list(docs.items())
    print(
        f"\nthreadmill's method: {args.tasks:,} echo tasks, one worker process; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}; load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs; median (min-max) of "
        f"{args.runs} runs\n"
    )
    print(
        "| setup | worker command | Python | GIL | method: tasks / (last finish - first start) "
        "| wall: tasks / (last finish - launch) | start-up (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, doc in rows:
        runs = doc["runs"]
        gil = "on" if doc["gil_enabled"] else "off"
        print(
            f"| {key} ({doc['version']}) | `{doc['command']}` | {doc['python']} | {gil} | "
            f"{summary([r['method'] for r in runs])} | {summary([r['wall'] for r in runs])} | "
            f"{summary([r['startup'] for r in runs], 2)} |"
        )


if __name__ == "__main__":
    main()
