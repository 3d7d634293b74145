"""The threads that run sync tasks, woken sparingly and handing results back to the loop in bursts.

Waking one thread per call costs more than a no-op task: ten threads woken for ten short calls
fight over the GIL (about four context switches and twice the CPU per task, measured with
``getrusage`` on a drain of no-op tasks). So a call wakes a thread only when none is awake: an
awake thread takes the calls queued after its own before it sleeps again. Calls that still wait
``SPREAD_AFTER`` later (the awake threads are busy with long calls) wake as many more threads
as there are calls waiting, and a call made while every awake thread is in a call begun over
``SPREAD_AFTER`` ago wakes one at once: long calls still run side by side, up to the pool's size.

``loop.run_in_executor`` would also wake the loop once per finished call (a write to its
self-pipe, a trip through the selector). Here a thread that finishes queues its result and
wakes the loop only if no wake-up is pending yet; the loop then delivers every result that
arrived meanwhile at once.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# How long a call may wait for an awake thread before more threads are woken (seconds).
SPREAD_AFTER = 0.001


class TaskThreads:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, name: str) -> None:
        self._loop = loop
        self._size = size
        self._work: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()  # guards _awake and _stopping against the threads' sleep
        # One token wakes one sleeping thread (a C queue: threading.Semaphore is Python code
        # around a Condition, and its release showed in profiles).
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._awake = 0  # threads woken and not yet asleep again
        self._in_call: dict[int, float] = {}  # thread ident -> when its current call began
        self._stopping = False
        self._spread_pending = False
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
        the future does not stop the call (Python cannot stop a thread). Called on the loop."""
        future: asyncio.Future[T] = self._loop.create_future()
        with self._done_lock:
            self._running.add(future)
        with self._lock:
            self._work.append((future, function, args))
            if self._awake == 0 or self._all_awake_are_in_long_calls():
                self._wake(1)
        if not self._spread_pending:
            self._spread_pending = True
            self._loop.call_later(SPREAD_AFTER, self._spread)
        return future

    def _all_awake_are_in_long_calls(self) -> bool:
        """Whether no awake thread will be free soon: each is in a call begun over
        SPREAD_AFTER ago (under _lock). Then a new call wakes a thread at once instead of
        waiting for the spread."""
        if len(self._in_call) < self._awake:
            return False  # one is between calls: it takes the new one
        begun_before = time.monotonic() - SPREAD_AFTER
        return all(begun < begun_before for begun in self._in_call.values())

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` sleeping threads (under _lock)."""
        count = min(count, self._size - self._awake)
        if count > 0:
            self._awake += count
            for _ in range(count):
                self._bell.put(None)

    def _spread(self) -> None:
        """On the loop: calls still waiting get threads of their own."""
        with self._lock:
            waiting = len(self._work)
            self._wake(waiting)
        self._spread_pending = waiting > 0
        if waiting:
            self._loop.call_later(SPREAD_AFTER, self._spread)

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
        """End the threads once the calls queued have returned; with ``wait``, wait for that."""
        with self._lock:
            self._stopping = True
            self._wake(self._size)
        if wait:
            for thread in self._threads:
                thread.join()

    def _next(self) -> Any:
        """The next call for this thread, sleeping while there is none; None: stop."""
        me = threading.get_ident()
        while True:
            with self._lock:
                self._in_call.pop(me, None)
                if self._work:
                    self._in_call[me] = time.monotonic()
                    return self._work.popleft()
                if self._stopping:
                    return None
                self._awake -= 1
            self._bell.get()

    def _serve(self) -> None:
        self._bell.get()  # asleep until the first call (the pool counts it asleep)
        while True:
            item = self._next()
            if item is None:
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
