"""Conversions between a task hash in Redis and the framework's ``TaskResult``.

Times are stored as integer milliseconds of the Redis clock; errors as a JSON array of
``[exception class path, traceback]`` pairs; worker ids as a JSON array of strings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from .compat import Task, TaskError, TaskResultStatus
from .exceptions import InvalidTaskPayload
from .shims import django as django_shim

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# NaN and the infinities are written as Python's json module writes them (and reads them back),
# as the framework accepts them in arguments and return values.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def loads(raw: bytes) -> Any:
    """``json.loads`` for stored JSON; the empty containers every no-argument call stores are
    common enough to skip the parser."""
    if raw == b"[]":
        return []
    if raw == b"{}":
        return {}
    return json.loads(raw.decode())


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (``run_after`` is read back equal to what was
    given: the framework compares results field by field)."""
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(value: bytes | str | None) -> datetime | None:
    if value is None:
        return None
    moment = EPOCH + timedelta(microseconds=int(value))
    return moment if settings.USE_TZ else timezone.make_naive(moment)


def from_ms(value: int | str | bytes | None) -> datetime | None:
    return _moment(settings.USE_TZ, value)


def _moment(use_tz: bool, value: int | str | bytes | None) -> datetime | None:
    """``from_ms`` with ``USE_TZ`` read once by the caller (a result has several times)."""
    if value is None:
        return None
    moment = _utc_moment(value)
    return moment if use_tz else timezone.make_naive(moment)


# Datetimes are immutable, so shared: the tasks of one claim share their start, those of one
# enqueue_many their enqueue time.
@functools.lru_cache(maxsize=4096)
def _utc_moment(value: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def error_json(exception_class_path: str, traceback: str) -> str:
    return dumps([exception_class_path, traceback])


def resolve_task(path: str) -> Any:
    """The registered ``Task`` that ``path`` names; anything else is refused, never run.
    Found once per path (a refusal is not kept: the module may be fixed and reloaded)."""
    return _resolve_task(path)


@functools.lru_cache(maxsize=4096)  # raises are not cached; paths come from Redis: bounded
def _resolve_task(path: str) -> Any:
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
    """The task with the call options it was stored with. Built through the framework
    (``dataclasses.replace``, which validates it); a task that no longer passes the backend's
    validation (QUEUES or the allowed priorities changed since) is read back as it was stored."""
    try:
        return _validated_variant(task, tuple(changes.items()))
    except TypeError:  # an unhashable option (a dict in a custom field): not kept
        return _replaced(task, changes)


@functools.lru_cache(maxsize=1024)
def _validated_variant(task: Any, changes: tuple[tuple[str, Any], ...]) -> Any:
    return _replaced(task, dict(changes))


def _replaced(task: Any, changes: dict[str, Any]) -> Any:
    try:
        return dataclasses.replace(task, **changes)
    except Exception:  # InvalidTask, or a backend no longer configured
        return django_shim.unvalidated(task, **changes)


def _text(fields: dict[bytes, bytes], name: bytes) -> str | None:
    value = fields.get(name)
    return None if value is None else value.decode()


def _json_list(fields: dict[bytes, bytes], name: bytes) -> list[Any]:
    raw = fields.get(name)
    if raw is None:
        return []
    value = loads(raw)
    if not isinstance(value, list):
        raise ValueError(f"field {name.decode()!r} is not a JSON array")
    return value


def _worker_ids(raw: bytes | None) -> list[str]:
    """The stored JSON array of worker ids. The scripts write it without spaces and worker ids
    hold no quote or backslash, so it is split without the JSON parser when it looks so;
    anything else goes through the parser."""
    if raw is None:
        return []
    if raw[:2] == b'["' and raw[-2:] == b'"]' and b"\\" not in raw:
        inner = raw[2:-2]
        if b'"' not in inner.replace(b'","', b""):  # no quote but the separators
            return inner.decode().split('","')
    value = loads(raw)
    if not isinstance(value, list):
        raise ValueError("field 'workers' is not a JSON array")
    return [str(w) for w in value]


_STATUSES = {status.value.encode(): status for status in TaskResultStatus}


def result_from_hash(task_id: str, fields: dict[bytes, bytes]) -> Any:
    """Build the TaskResult stored in a task hash.

    Raises InvalidTaskPayload when the hash is malformed or names something that is not a task.
    Run for every task a worker claims and every ``get_result``, so each field is read once.
    """
    get = fields.get
    try:
        path = get(b"path")
        if not path:
            raise InvalidTaskPayload("the stored task has no 'path' field")
        task = resolve_task(path.decode())
        use_tz = settings.USE_TZ
        run_after = from_us(get(b"run_after"))
        raw_backend, raw_queue = get(b"backend"), get(b"queue")
        backend = None if raw_backend is None else raw_backend.decode()
        queue = None if raw_queue is None else raw_queue.decode()
        priority = int(fields[b"priority"])
        if (
            task.priority != priority
            or task.queue_name != queue
            or task.run_after != run_after
            or task.backend != backend
        ):
            task = _task_variant(
                task, priority=priority, queue_name=queue, run_after=run_after, backend=backend
            )
        args = loads(fields[b"args"])
        kwargs = loads(fields[b"kwargs"])
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidTaskPayload("stored args must be a JSON array and kwargs a JSON object")
        errors = [
            TaskError(exception_class_path=c, traceback=t) for c, t in _json_list(fields, b"errors")
        ]
        status = _STATUSES.get(get(b"status", b""))
        if status is None:  # raises ValueError: not a status
            status = TaskResultStatus(_text(fields, b"status") or "")
        started_at = _moment(use_tz, get(b"started_at"))
        last_attempt = get(b"last_attempted_at")
        result = django_shim.new_result(
            task=task,
            id=task_id,
            status=status,
            enqueued_at=_moment(use_tz, get(b"enqueued_at")),
            started_at=started_at,
            finished_at=_moment(use_tz, get(b"finished_at")),
            # Only a later attempt stores its own start; the first one's is started_at.
            last_attempted_at=started_at if last_attempt is None else _moment(use_tz, last_attempt),
            args=args,
            kwargs=kwargs,
            backend=backend or "",
            errors=errors,
            worker_ids=_worker_ids(get(b"workers")),
        )
        if b"return" in fields:
            django_shim.set_return_value(result, loads(fields[b"return"]))
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
