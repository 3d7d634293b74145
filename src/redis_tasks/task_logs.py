"""Log records that say which task they came from: its id, path, attempt and backend.

A JSON log handler can then group one task's lines, whatever logger wrote them (the task's own,
a library's, the worker's about that task). The worker marks the task being run in a context
variable (each async task runs in its own asyncio task, each sync one in its own thread, an
isolated one in its child), and ``TaskFieldsFilter``, added to a handler in ``LOGGING``, copies
the mark onto every record as ``task_id``, ``task_path``, ``task_attempt`` and
``task_backend`` (None outside a task, so a format string that names them never fails)::

    "filters": {"task": {"()": "redis_tasks.task_logs.TaskFieldsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["task"],
                             "formatter": "with_task"}},
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple


class TaskFields(NamedTuple):
    task_id: str | None
    task_path: str | None
    task_attempt: int | None
    task_backend: str | None


NO_TASK = TaskFields(None, None, None, None)
_current: contextvars.ContextVar[TaskFields] = contextvars.ContextVar(
    "redis_tasks_current_task", default=NO_TASK
)


def fields_of(result: Any) -> TaskFields:
    return TaskFields(result.id, result.task.module_path, int(result.attempts), result.backend)


def enter(result: Any) -> None:
    """Mark the current context (an asyncio task's, or a thread's) as running ``result``."""
    _current.set(fields_of(result))


@contextlib.contextmanager
def running(result: Any) -> Iterator[None]:
    """Mark the current context as running ``result`` until the block ends (a worker thread
    runs many tasks one after another)."""
    token = _current.set(fields_of(result))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> TaskFields | None:
    """The task being run here, or None."""
    fields = _current.get()
    return None if fields is NO_TASK else fields


class TaskFieldsFilter(logging.Filter):
    """Adds ``task_id``, ``task_path``, ``task_attempt`` and ``task_backend`` to each record
    (None outside a task). It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        record.task_id = fields.task_id
        record.task_path = fields.task_path
        record.task_attempt = fields.task_attempt
        record.task_backend = fields.task_backend
        return True
