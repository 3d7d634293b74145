"""A one-line progress bar for a terminal: the burst worker's (done, rate, ETA from the queue
depth) and ``redis_tasks drain``'s.

On a terminal the bar is redrawn in place; whatever else is written to the terminal
meanwhile (a log line, a signal's message) first clears it (``ProgressLine.clear``, and
``keep_logs_apart`` for log records), so no line lands inside the bar's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .worker import Worker

WIDTH = 30
CLEAR_LINE = "\r\033[K"


def render(done: int, remaining: int, elapsed: float) -> str:
    total = done + remaining
    if total == 0:
        return "no tasks due"
    rate = done / elapsed if elapsed > 0 else 0.0
    filled = int(WIDTH * done / total)
    eta = f"{remaining / rate:5.1f}s" if rate > 0 else "  ?  "
    bar = "#" * filled + "." * (WIDTH - filled)
    return f"[{bar}] {done}/{total} tasks  {rate:8.1f}/s  ETA {eta}"  # done: run or cancelled


class ProgressLine:
    """One line of a terminal, redrawn in place; on anything else (``--progress`` into a file),
    a plain line when the figures change, at most once a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False
        self._last = ("", 0.0)  # plain mode: the last line written, and when

    def draw(self, line: str) -> None:
        if not self.tty:
            now = time.monotonic()
            if line != self._last[0] and now - self._last[1] >= 1.0:
                self.stream.write(line + "\n")
                self.stream.flush()
                self._last = (line, now)
            return
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        """Wipe the bar, so that the next write starts on a clean line."""
        if self.drawn:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.drawn = False

    def finish(self, line: str) -> None:
        """The last state, left on its own line."""
        self.stream.write((CLEAR_LINE if self.tty else "") + line + "\n")
        self.stream.flush()
        self.drawn = False


class _ClearBar(logging.Filter):
    def __init__(self, bar: ProgressLine) -> None:
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.clear()  # the record goes out next, on a line of its own
        return True


@contextlib.contextmanager
def keep_logs_apart(bar: ProgressLine, loggers: Sequence[str]) -> Iterator[None]:
    """While the bar is shown, a record handled by a handler of these loggers (or of the root
    logger) clears the bar first; the next redraw puts it back under the record."""
    handlers = {h for name in (*loggers, "") for h in logging.getLogger(name).handlers}
    clearing = _ClearBar(bar)
    for handler in handlers:
        handler.addFilter(clearing)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(clearing)


async def show_progress(
    worker: Worker, backends: Sequence[RedisBackend], bar: ProgressLine, every: float = 0.2
) -> None:
    """Redraw the bar until cancelled, then leave the final count on its own line."""
    started = time.monotonic()
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
            with contextlib.suppress(Exception):  # Redis away: the worker says so, not the bar
                total = max(total, done + await asyncio.to_thread(remaining))
            bar.draw(render(done, max(total - done, 0), time.monotonic() - started))
            await asyncio.sleep(every)
    except asyncio.CancelledError:
        done = worker.tasks_done
        bar.finish(render(done, 0, time.monotonic() - started))
        raise
