"""What this machine allows any Redis task queue: the backend's own Redis work, timed from raw
sockets with no Python of the backend in the loop.

Why: issue 5's targets were set on another machine. These figures say how much of a missed
target is the machine (the round trips, Redis's own work, waking a process) and how much is
the backend's Python: ``enqueue()`` can be no faster than its script's round trip, a drain no
faster than its claims and finishes, and an enqueue -> finished latency no shorter than one
process waking another through Redis and back.

Each command is packed by hiredis before the clock starts and sent on a plain socket; replies
are parsed by hiredis's reader. The scripts and arguments are the backend's own (built by its
store, as ``enqueue()``, ``enqueue_many()`` and the worker build them):

1. ``PING`` round trip: the least a command costs.
2. The enqueue script, one task a call, one call at a time: the ceiling of ``enqueue()``.
3. The enqueue script, 1,000 tasks a call: the ceiling of ``enqueue_many()``.
4. Drain: claims of 10 and finishes of 10 on one connection, each claim sent with the finishes
   of the tasks before it in one write (as the worker sends them): the ceiling of one worker.
5. Wake chain: a second process blocks in ``BLPOP``; the client pushes, the other process
   pushes back, the client's own ``BLPOP`` returns. Two processes woken through Redis and
   back: the least an enqueue -> finished latency can be, for any design with a worker
   process (no claim, no task, no result written).

Median of ``--runs`` runs (min-max). The server is a private ``redis-server`` on a free port.

    python benchmarks/floor.py [--runs 5]      # needs hiredis (the [hiredis] extra)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hiredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from redis_tasks.testing import RedisServer  # noqa: E402

ENQUEUES = 3000
BULK = 10_000
DRAIN = 10_000
CLAIM_SIZE = 10
WAKES = 300
WAKE_GAP = 0.002  # seconds between wake samples, so both processes are idle again


class RawConnection:
    """A socket and a hiredis reader: one write per call, replies parsed in C."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def send(self, packed: bytes) -> None:
        self.sock.sendall(packed)

    def replies(self, count: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < count:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.reader.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"Redis refused a command: {reply}")
            out.append(reply)
        return out

    def call(self, packed: bytes) -> Any:
        self.send(packed)
        return self.replies(1)[0]


def pack(*args: Any) -> bytes:
    packed = hiredis.pack_command(tuple(str(a) if isinstance(a, int) else a for a in args))  # type: ignore[arg-type]
    return bytes(packed)


def backend() -> Any:
    from redis_tasks.compat import task_backends  # after django.setup()

    return task_backends["default"]


def enqueue_commands(batches: int, per_batch: int) -> list[bytes]:
    """The enqueue script's calls, as ``enqueue_many`` would send them (fresh ids each)."""
    from benchmarks.bench_tasks import noop

    from redis_tasks import calls, scripts

    b = backend()
    store = b.store
    store.connections.sync.script_load(scripts.ENQUEUE.source)
    commands = []
    for _ in range(batches):
        _, requests = b.prepare_many(noop, [((), {})] * per_batch)
        call = calls.enqueue(store.keys, store.settings, requests)  # as the store builds it
        commands.append(pack(*call.command()))
    return commands


def flush(conn: RawConnection) -> None:
    assert conn.call(pack("FLUSHDB")) == b"OK"


def ping_us(conn: RawConnection) -> float:
    packed = pack("PING")
    start = time.perf_counter()
    for _ in range(ENQUEUES):
        conn.call(packed)
    return (time.perf_counter() - start) / ENQUEUES * 1e6


def enqueue_rate(conn: RawConnection) -> float:
    flush(conn)
    commands = enqueue_commands(ENQUEUES, 1)
    start = time.perf_counter()
    for packed in commands:
        conn.call(packed)
    return ENQUEUES / (time.perf_counter() - start)


def bulk_rate(conn: RawConnection) -> float:
    flush(conn)
    commands = enqueue_commands(BULK // 1000, 1000)
    start = time.perf_counter()
    for packed in commands:
        conn.call(packed)
    return BULK / (time.perf_counter() - start)


def claim_command() -> tuple[Any, ...]:
    """The worker's claim of CLAIM_SIZE tasks, as the store builds it (its script loaded)."""
    from redis_tasks import calls, scripts

    store = backend().store
    store.connections.sync.script_load(scripts.CLAIM.source)
    call = calls.claim(store.keys, store.settings, "floor-worker", CLAIM_SIZE, [], False, "")
    return call.command()


def drain_rate(conn: RawConnection) -> float:
    from benchmarks.bench_tasks import noop

    from redis_tasks import calls, scripts

    flush(conn)
    b = backend()
    store = b.store
    b.enqueue_many(noop, [((), {})] * (DRAIN + CLAIM_SIZE))
    claim = pack(*claim_command())
    finish_sha = store.connections.sync.script_load(scripts.FINISH.source)
    head = calls.finish_head(store.keys, store.settings)
    width = len(calls.CLAIM_FIELDS)
    reply = conn.call(claim)  # the first CLAIM_SIZE, untimed: each finish rides with a claim
    done = 0
    start = time.perf_counter()
    while entries := reply[3:]:
        items: list[Any] = []
        for entry in entries:
            items += [entry[width], entry[width + 1], "SUCCESSFUL", "null", ""]
        finish = pack("EVALSHA", finish_sha, 1, store.keys.running, *head, len(entries), *items)
        conn.send(finish + claim)
        reply = conn.replies(2)[1]
        done += len(reply[3:])
    seconds = time.perf_counter() - start
    if done != DRAIN:
        raise RuntimeError(f"the drain claimed {done} tasks, not {DRAIN}")
    return done / seconds


def wake_echo(port: int) -> None:
    """The other process of the wake chain: every push on 'floor:wake' is pushed back."""
    conn = RawConnection(port)
    blpop = pack("BLPOP", "floor:wake", 0)
    while True:
        _, value = conn.call(blpop)
        if value == b"stop":
            return
        conn.call(pack("LPUSH", "floor:back", value))


def wake_chain(conn: RawConnection, port: int) -> tuple[float, float]:
    """p50 and p99 ms of push -> the other process pushes back -> our BLPOP returns."""
    flush(conn)
    echo = subprocess.Popen([sys.executable, __file__, "--echo", str(port)])
    try:
        push, back = pack("LPUSH", "floor:wake", "x"), pack("BLPOP", "floor:back", 5)
        conn.call(push)  # both warm
        conn.call(back)
        samples = []
        for _ in range(WAKES):
            time.sleep(WAKE_GAP)
            start = time.perf_counter()
            conn.send(push + back)
            if conn.replies(2)[1] is None:
                raise RuntimeError("the echo process did not answer within 5 s")
            samples.append((time.perf_counter() - start) * 1000)
        conn.call(pack("LPUSH", "floor:wake", "stop"))
        echo.wait(10)
    finally:
        if echo.poll() is None:
            echo.kill()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]


# What each floor figure is, and the figure of compare.py it bounds (None: none).
FIGURES = [
    ("ping", "`PING` round trip", "µs", 1, None),
    ("enqueue", "enqueue script, 1 task a call, one caller", "tasks/s", 0, "enqueue"),
    ("bulk", "enqueue script, 1,000 tasks a call", "tasks/s", 0, "bulk"),
    ("drain", f"claims of {CLAIM_SIZE} + finishes, one connection", "tasks/s", 0, "drain_sync"),
    ("wake_p50", "wake chain through a second process, p50", "ms", 2, "idle_p50"),
    ("wake_p99", "wake chain through a second process, p99", "ms", 2, "idle_p99"),
]


def summary(values: list[float], digits: int) -> str:
    med = statistics.median(values)
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def measure(runs: int) -> dict[str, Any]:
    """Every floor figure, ``runs`` times, on a private server; with what it ran on."""
    server = RedisServer(None, None).start()
    try:
        os.environ["REDIS_TASKS_BENCH_URL"] = server.url
        os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
        import django

        django.setup()
        version = (
            subprocess.run([server.binary, "--version"], capture_output=True, text=True, check=True)
            .stdout.split()[2]
            .removeprefix("v=")
        )
        conn = RawConnection(server.port)
        figures: dict[str, list[float]] = {}
        for run in range(runs):
            p50, p99 = wake_chain(conn, server.port)
            for name, value in (
                ("ping", ping_us(conn)),
                ("enqueue", enqueue_rate(conn)),
                ("bulk", bulk_rate(conn)),
                ("drain", drain_rate(conn)),
                ("wake_p50", p50),
                ("wake_p99", p99),
            ):
                figures.setdefault(name, []).append(value)
            print(f"  floor run {run + 1}: "
                  + ", ".join(f"{k} {v[-1]:,.2f}" for k, v in figures.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        server.stop()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}, Redis {version}"
    return {"figures": figures, "when": when, "machine": machine, "runs": runs}


def table(floor: dict[str, Any]) -> str:
    rows = ["| what | floor, median (min-max) |", "|---|---|"]
    for key, label, unit, digits, _ in FIGURES:
        rows.append(f"| {label} | {summary(floor['figures'][key], digits)} {unit} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.echo:
        wake_echo(options.echo)
        return
    floor = measure(options.runs)
    if options.json:
        Path(options.json).write_text(json.dumps(floor, indent=1))
    print(f"Floor, {floor['when']}, {floor['machine']}; {floor['runs']} runs\n")
    print(table(floor))


if __name__ == "__main__":
    main()
