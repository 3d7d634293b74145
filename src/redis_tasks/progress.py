"""A one-line progress bar for the worker in burst mode: done, rate, and ETA from queue depth."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .backend import RedisBackend
from .worker import Worker

WIDTH = 30


def render(done: int, remaining: int, elapsed: float) -> str:
    total = done + remaining
    rate = done / elapsed if elapsed > 0 else 0.0
    filled = int(WIDTH * done / total) if total else WIDTH
    eta = f"{remaining / rate:5.1f}s" if rate > 0 else "  ?  "
    bar = "#" * filled + "." * (WIDTH - filled)
    return f"[{bar}] {done}/{total} tasks  {rate:8.1f}/s  ETA {eta}"  # done: run or cancelled


async def show_progress(
    worker: Worker,
    backends: Sequence[RedisBackend],
    stream: TextIO = sys.stderr,
    every: float = 0.2,
) -> None:
    """Redraw the bar until cancelled; a terminal gets one updating line, a file plain lines."""
    started = time.monotonic()
    tty = stream.isatty()
    last_line = ""
    total = 0  # never shrinks: a task finishing mid-count is in neither number for a moment

    def remaining() -> int:
        """Tasks a burst worker still has to run: ready now, or running (deferred ones are not)."""
        count = 0
        for backend in backends:
            counts = backend.store.count_waiting(worker.queues or sorted(backend.queues) or None)
            count += counts["ready"] + counts["running"]
        return count

    try:
        while True:
            done = worker.tasks_done
            total = max(total, done + await asyncio.to_thread(remaining))
            line = render(done, total - done, time.monotonic() - started)
            if tty:
                stream.write("\r" + line)
                stream.flush()
            elif line != last_line:
                stream.write(line + "\n")
            last_line = line
            await asyncio.sleep(every if tty else max(every, 1.0))
    except asyncio.CancelledError:
        line = render(worker.tasks_done, 0, time.monotonic() - started)
        stream.write(("\r" + line + "\n") if tty else line + "\n")
        stream.flush()
        raise
