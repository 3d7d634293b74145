"""Redis-side cost per task, in instructions executed by ``redis-server``: enqueue, bulk
enqueue (``enqueue_many``, batches of 1,000), claim (batches of 10) and finish (batches of 10,
as the worker's group commit sends them).

Why: wall-clock figures on a shared 2-CPU machine move by ±20%; callgrind's instruction
counts do not (the same count twice for the same inputs), so they show what a change to the
Lua scripts saves. ``redis-server`` runs under ``valgrind --tool=callgrind`` on a free port in
a temp dir; counters are dumped (``callgrind_control -d``) between the phases, and the
differences are divided by the number of tasks. Kernel time (sockets) is not counted.

    python benchmarks/redis_cost.py [--tasks 1000]      # needs valgrind and redis-server
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import redis  # noqa: E402

from redis_tasks.testing import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    tasks = parser.parse_args().tasks
    port, folder = free_port(), tempfile.mkdtemp(prefix="redis-cost-")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p", "redis-server",
         "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        measure(server.pid, folder, f"redis://127.0.0.1:{port}", tasks)
    finally:
        server.terminate()
        server.wait()


def instructions(pid: int, folder: str) -> int:
    """Instructions executed so far: dump the counters, add up every dump's total."""
    before = set(glob.glob(f"{folder}/cg.{pid}.*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    while set(glob.glob(f"{folder}/cg.{pid}.*")) == before:
        time.sleep(0.1)
    time.sleep(0.3)  # the dump file is complete
    total = 0
    for path in glob.glob(f"{folder}/cg.{pid}.*"):
        for line in Path(path).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total


def measure(pid: int, folder: str, url: str, tasks: int) -> None:
    os.environ["REDIS_TASKS_BENCH_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
    import django

    django.setup()
    from benchmarks.bench_tasks import noop

    from redis_tasks.compat import task_backends

    store = task_backends["default"].store
    claims: list[Any] = []

    async def warm_up() -> None:  # every script loaded (compiled) before any count is taken
        for claim in (await store.claim("bench:1:x", 10, [])).claims:
            await store.afinish(claim, "SUCCESSFUL", "null", None)

    for _ in range(50):  # connections open
        noop.enqueue()
    asyncio.run(warm_up())
    store.connections.sync.flushdb()

    async def claim_all() -> None:
        while len(claims) < tasks:
            claims.extend((await store.claim("bench:1:x", 10, [])).claims)

    async def finish_all() -> None:
        for i in range(0, tasks, 10):
            await asyncio.gather(
                *(store.afinish(c, "SUCCESSFUL", "null", None) for c in claims[i : i + 10])
            )

    backend = task_backends["default"]
    bulk_start = instructions(pid, folder)
    for _ in range(max(tasks // 1000, 1)):
        backend.enqueue_many(noop, [((), {})] * 1000)
    bulk_done = instructions(pid, folder)
    bulk_tasks = max(tasks // 1000, 1) * 1000
    store.connections.sync.flushdb()
    start = instructions(pid, folder)
    for _ in range(tasks):
        noop.enqueue()
    enqueued = instructions(pid, folder)
    asyncio.run(claim_all())
    claimed = instructions(pid, folder)
    asyncio.run(finish_all())
    finished = instructions(pid, folder)
    print(f"redis-server instructions per task ({tasks:,} tasks):")
    print(f"  enqueue (one task.enqueue() each)  {(enqueued - start) / tasks:>10,.0f}")
    print(f"  bulk    (enqueue_many, 1,000 a call) {(bulk_done - bulk_start) / bulk_tasks:>8,.0f}")
    print(f"  claim   (batches of 10)            {(claimed - enqueued) / tasks:>10,.0f}")
    print(f"  finish  (batches of 10)            {(finished - claimed) / tasks:>10,.0f}")


if __name__ == "__main__":
    main()
