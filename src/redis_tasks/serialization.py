"""Conversions between a task hash in Redis and the framework's ``TaskResult``.

Times are stored as integer milliseconds of the Redis clock; errors as a JSON array of
``[exception class path, traceback]`` pairs; worker ids as a JSON array of strings.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from .compat import Task, TaskError, TaskResult, TaskResultStatus
from .exceptions import InvalidTaskPayload

dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def to_ms(moment: datetime) -> int:
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return int(moment.timestamp() * 1000)


def from_ms(value: str | bytes | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    if not settings.USE_TZ:
        return timezone.make_naive(moment)
    return moment


def error_json(exception_class_path: str, traceback: str) -> str:
    return dumps([exception_class_path, traceback])


def resolve_task(path: str) -> Any:
    """The registered ``Task`` that ``path`` names; anything else is refused, never run."""
    try:
        candidate = import_string(path)
    except ImportError as exc:
        raise InvalidTaskPayload(f"{path!r} cannot be imported: {exc}") from exc
    if not isinstance(candidate, Task):
        raise InvalidTaskPayload(
            f"{path!r} is not a task (a function decorated with @task); refusing to run it"
        )
    if candidate.module_path != path:
        raise InvalidTaskPayload(
            f"{path!r} names the task {candidate.module_path!r} under another path; refusing"
        )
    return candidate


def _task_variant(task: Any, **changes: Any) -> Any:
    """The task with stored call options, built without re-running the backend's validation
    (a result stays readable after QUEUES or priorities change)."""
    if all(getattr(task, name) == value for name, value in changes.items()):
        return task
    clone = object.__new__(type(task))
    for f in dataclasses.fields(task):
        object.__setattr__(clone, f.name, changes.get(f.name, getattr(task, f.name)))
    return clone


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    value = fields.get(name.encode())
    return None if value is None else value.decode()


def _json_list(fields: dict[bytes, bytes], name: str) -> list[Any]:
    raw = fields.get(name.encode())
    if raw is None:
        return []
    value = json.loads(raw)
    if not isinstance(value, list):
        raise ValueError(f"field {name!r} is not a JSON array")
    return value


def result_from_hash(task_id: str, fields: dict[bytes, bytes]) -> Any:
    """Build the TaskResult stored in a task hash.

    Raises InvalidTaskPayload when the hash is malformed or names something that is not a task.
    """
    try:
        path = _text(fields, "path")
        if not path:
            raise InvalidTaskPayload("the stored task has no 'path' field")
        task = resolve_task(path)
        run_after = from_ms(fields.get(b"run_after"))
        task = _task_variant(
            task,
            priority=int(fields[b"priority"]),
            queue_name=_text(fields, "queue"),
            run_after=run_after,
            backend=_text(fields, "backend"),
        )
        args = json.loads(fields[b"args"])
        kwargs = json.loads(fields[b"kwargs"])
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidTaskPayload("stored args must be a JSON array and kwargs a JSON object")
        errors = [
            TaskError(exception_class_path=c, traceback=t) for c, t in _json_list(fields, "errors")
        ]
        result: Any = TaskResult(
            task=task,
            id=task_id,
            status=TaskResultStatus(_text(fields, "status") or ""),
            enqueued_at=from_ms(fields.get(b"enqueued_at")),
            started_at=from_ms(fields.get(b"started_at")),
            finished_at=from_ms(fields.get(b"finished_at")),
            # Only a later attempt stores its own start; the first one's is started_at.
            last_attempted_at=from_ms(fields.get(b"last_attempted_at", fields.get(b"started_at"))),
            args=args,
            kwargs=kwargs,
            backend=_text(fields, "backend") or "",
            errors=errors,
            worker_ids=[str(w) for w in _json_list(fields, "workers")],
        )
        if b"return" in fields:
            object.__setattr__(result, "_return_value", json.loads(fields[b"return"]))
    except InvalidTaskPayload:
        raise
    except (
        KeyError,
        ValueError,
        TypeError,
        UnicodeDecodeError,
        OverflowError,
        OSError,
        RecursionError,
    ) as exc:
        raise InvalidTaskPayload(f"task {task_id!r} has malformed stored data: {exc!r}") from exc
    return result
