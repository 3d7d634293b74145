"""The threads that run sync tasks, handing results back to the event loop in bursts.

``loop.run_in_executor`` wakes the loop once per finished call (a write to its self-pipe, a
trip through the selector), which costs more than a no-op task. Here a thread that finishes
queues its result and wakes the loop only if no wake-up is pending yet; the loop then delivers
every result that arrived meanwhile at once.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None  # the work item that ends a thread


class TaskThreads:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, name: str) -> None:
        self._loop = loop
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._done_lock = threading.Lock()
        self._wake_pending = False
        self._running: set[asyncio.Future[Any]] = set()  # calls not returned (under _done_lock)
        self._on_return: dict[asyncio.Future[Any], Callable[[], None]] = {}
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``function(*args)`` in a thread; the future is resolved on the loop. Cancelling
        the future does not stop the call (Python cannot stop a thread)."""
        future: asyncio.Future[T] = self._loop.create_future()
        with self._done_lock:
            self._running.add(future)
        self._work.put((future, function, args))
        return future

    def abandon(self, future: asyncio.Future[Any], on_return: Callable[[], None]) -> bool:
        """Give up on a call (its timeout passed, or shutdown): its result is dropped, and
        ``on_return`` runs in its thread when the call returns at last, loop or no loop.
        False if the call has already returned."""
        with self._done_lock:
            if future not in self._running:
                return False
            self._on_return[future] = on_return
            return True

    def shutdown(self, wait: bool) -> None:
        """End the threads once their current calls return; with ``wait``, wait for that."""
        for _ in self._threads:
            self._work.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, function, args = item
            done: tuple[asyncio.Future[Any], Any, BaseException | None]
            try:
                done = (future, function(*args), None)
            except BaseException as exc:  # handed to the caller, as an executor would
                done = (future, None, exc)
            with self._done_lock:
                self._running.discard(future)
                on_return = self._on_return.pop(future, None)
                wake = on_return is None and not self._wake_pending
                if on_return is None:
                    self._done.append(done)
                    self._wake_pending = True
            if on_return is not None:  # abandoned: nobody waits for the result
                on_return()
            elif wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody waits for results any more
                    return

    def _deliver(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
            self._wake_pending = False
        for future, value, exc in done:
            if future.done():  # cancelled: its caller gave up on it (timeout, shutdown)
                continue
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)
