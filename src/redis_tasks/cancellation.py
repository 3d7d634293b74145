"""Cancelling a running task (``redis_tasks cancel ID``, the dashboard, ``Inspector.cancel``).

The cancel is marked on the task in Redis and sent to the worker that runs it (its
``cancel:<worker id>`` list, which the worker listens to). An async task's coroutine is cancelled
there and then (it sees ``CancelledError``); an isolated task's child process is killed. A sync
task cannot be stopped from outside: it is told, and stops at its next ``check()``::

    from redis_tasks import cancellation

    @task()
    def export(rows: list[int]) -> None:
        for row in rows:
            cancellation.check()   # raises TaskCancelled once an operator cancelled the task
            write(row)

A sync task that never checks runs to its end, and its outcome is recorded as cancelled anyway.
Either way the task ends FAILED with ``TaskCancelled``, its limit slots are given back, and it is
never retried.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

from .exceptions import TaskCancelled

_current: ContextVar[threading.Event | None] = ContextVar("redis_tasks_cancel", default=None)


def check() -> None:
    """Raise ``TaskCancelled`` if an operator cancelled the task running here."""
    if cancelled():
        raise TaskCancelled("cancelled by an operator while it ran")


def cancelled() -> bool:
    """Whether an operator cancelled the task running here (False outside a task)."""
    event = _current.get()
    return event is not None and event.is_set()


class Requests:
    """The cancels a worker received for the tasks it runs (thread-safe: sync tasks check from
    their own threads)."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event_for(self, task_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(task_id, threading.Event())

    def request(self, task_id: str) -> None:
        self.event_for(task_id).set()

    def requested(self, task_id: str) -> bool:
        with self._lock:
            event = self._events.get(task_id)
        return event is not None and event.is_set()

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._events.pop(task_id, None)


def running_under(event: threading.Event) -> object:
    """Make ``check()`` in this context answer for the task ``event`` stands for; returns the
    token for ``done``."""
    return _current.set(event)


def done(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
