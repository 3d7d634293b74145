"""What a pause costs on this machine: the same work timed hot (back to back) and right after
the process slept for a while, as each hop of an idle worker's task runs.

Why: an idle task crosses several processes that were asleep a moment before (Redis, the
worker's loop, its thread, the client). ``floor.py``'s wake chain shows that waking one
process through Redis is cheap here; this shows what the woken process then pays for the
Python it runs, which is where an idle worker's latency goes. Three kinds of work, each timed
``--samples`` times back to back and after sleeps of 0.5, 2 and 10 ms (``idle_trace.py``
and ``compare.py`` leave 2 ms between idle samples):

1. Pure Python work: 300 small ``json.dumps`` into a dict (no I/O, no other process).
2. A ``PING`` round trip on a raw socket (hiredis's reader; Redis and the kernel only).
3. ``noop.enqueue()``, the whole public call (the settings of ``bench_settings.py``, no
   worker running, so nobody else competes for the CPUs).

The server is a private ``redis-server`` on a free port. Medians, µs.

    python benchmarks/cold_start.py [--samples 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from redis_tasks.testing import RedisServer  # noqa: E402

PAUSES = [0.0, 0.0005, 0.002, 0.01]  # seconds slept before each sample; 0: back to back


def python_work() -> None:
    made = {}
    for i in range(300):
        made[str(i)] = json.dumps([i, "x"])


def ping_on(port: int) -> Callable[[], None]:
    import hiredis

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader, packed = hiredis.Reader(), hiredis.pack_command(("PING",))

    def ping() -> None:
        sock.sendall(packed)
        while (reply := reader.gets()) is False:
            reader.feed(sock.recv(1 << 16))
        assert reply == b"PONG", reply

    return ping


def timed(work: Callable[[], None], pause: float, samples: int) -> float:
    """Median µs of ``work`` with ``pause`` seconds of sleep before each sample."""
    for _ in range(20):
        work()
    spans = []
    for _ in range(samples):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        work()
        spans.append((time.perf_counter() - start) * 1e6)
    return statistics.median(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    samples = parser.parse_args().samples
    server = RedisServer(None, None).start()
    try:
        os.environ.setdefault("REDIS_TASKS_BENCH_TASK_LOG", "WARNING")
        from benchmarks.idle_trace import setup

        setup(server.url)  # bench_settings.py on this server
        from benchmarks.bench_tasks import noop

        def enqueue() -> None:
            noop.enqueue()

        works: list[tuple[str, Callable[[], None]]] = [
            ("pure Python (300 json.dumps)", python_work),
            ("PING, raw socket", ping_on(server.port)),
            ("noop.enqueue(), no worker", enqueue),
        ]
        heads = " | ".join("back to back" if p == 0 else f"after {p * 1000:g} ms" for p in PAUSES)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(f"Median µs over {samples} samples, {when}")
        print(f"\n| work | {heads} | slowest / back to back |")
        print("|---|" + "---|" * (len(PAUSES) + 1))
        for name, work in works:
            medians = [timed(work, pause, samples) for pause in PAUSES]
            cells = " | ".join(f"{m:,.0f}" for m in medians)
            print(f"| {name} | {cells} | {max(medians) / medians[0]:.1f}x |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
