"""Conversions between a task hash in Redis and the framework's ``TaskResult``.

Times are stored as integer milliseconds of the Redis clock; errors as a JSON array of
``[exception class path, traceback]`` pairs; worker ids as a JSON array of strings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from .compat import Task, TaskError, TaskResult, TaskResultStatus, normalize_json
from .exceptions import InvalidTaskPayload

dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _result_defaults() -> list[tuple[str, Callable[[], Any]]]:
    defaults: list[tuple[str, Callable[[], Any]]] = []
    for f in dataclasses.fields(TaskResult):
        if f.default is not dataclasses.MISSING:
            defaults.append((f.name, functools.partial(_same, f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            defaults.append((f.name, f.default_factory))
    return defaults


def _same(value: Any) -> Any:
    return value


_RESULT_DEFAULTS = _result_defaults()


def new_result(**values: Any) -> Any:
    """A ``TaskResult`` from values already in JSON form (``args`` a list, ``kwargs`` a dict of
    JSON types: what ``normalize_json`` would make of them), built without the dataclass
    ``__init__``, which costs more than the rest of running a no-op task. ``normalize_args``
    brings arguments from a caller into that form."""
    result = object.__new__(TaskResult)
    for name, default in _RESULT_DEFAULTS:
        object.__setattr__(result, name, default())
    for name, value in values.items():
        object.__setattr__(result, name, value)
    return result


def normalize_args(args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """The framework's normalisation of a call's arguments (tuples to lists, bytes to str...)."""
    normal_args = normalize_json(args) if args else []
    normal_kwargs = normalize_json(kwargs) if kwargs else {}
    return cast(list[Any], normal_args), cast(dict[str, Any], normal_kwargs)


def loads(raw: bytes) -> Any:
    """``json.loads`` for stored JSON; the empty containers every no-argument call stores are
    common enough to skip the parser."""
    if raw == b"[]":
        return []
    if raw == b"{}":
        return {}
    return json.loads(raw.decode())


def to_ms(moment: datetime) -> int:
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return int(moment.timestamp() * 1000)


def from_ms(value: int | str | bytes | None) -> datetime | None:
    return _moment(settings.USE_TZ, value)


def _moment(use_tz: bool, value: int | str | bytes | None) -> datetime | None:
    """``from_ms`` with ``USE_TZ`` read once by the caller (a result has several times)."""
    if value is None:
        return None
    moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    return moment if use_tz else timezone.make_naive(moment)


def error_json(exception_class_path: str, traceback: str) -> str:
    return dumps([exception_class_path, traceback])


_resolved: dict[str, Any] = {}


def resolve_task(path: str) -> Any:
    """The registered ``Task`` that ``path`` names; anything else is refused, never run.
    Found once per path (a refusal is never remembered: the module may be fixed and reloaded).
    """
    found = _resolved.get(path)
    if found is not None:
        return found
    found = _resolve_task(path)
    if len(_resolved) < 10_000:  # bounded: paths come from Redis
        _resolved[path] = found
    return found


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
    """The task with stored call options, built without re-running the backend's validation
    (a result stays readable after QUEUES or priorities change)."""
    if all(getattr(task, name) == value for name, value in changes.items()):
        return task
    clone = object.__new__(type(task))
    for f in dataclasses.fields(task):
        object.__setattr__(clone, f.name, changes.get(f.name, getattr(task, f.name)))
    return clone


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


def result_from_hash(task_id: str, fields: dict[bytes, bytes]) -> Any:
    """Build the TaskResult stored in a task hash.

    Raises InvalidTaskPayload when the hash is malformed or names something that is not a task.
    """
    try:
        path = _text(fields, b"path")
        if not path:
            raise InvalidTaskPayload("the stored task has no 'path' field")
        task = resolve_task(path)
        use_tz = settings.USE_TZ
        run_after = _moment(use_tz, fields.get(b"run_after"))
        backend = _text(fields, b"backend")
        task = _task_variant(
            task,
            priority=int(fields[b"priority"]),
            queue_name=_text(fields, b"queue"),
            run_after=run_after,
            backend=backend,
        )
        args = loads(fields[b"args"])
        kwargs = loads(fields[b"kwargs"])
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise InvalidTaskPayload("stored args must be a JSON array and kwargs a JSON object")
        errors = [
            TaskError(exception_class_path=c, traceback=t) for c, t in _json_list(fields, b"errors")
        ]
        started_at = _moment(use_tz, fields.get(b"started_at"))
        last_attempt = fields.get(b"last_attempted_at")
        result = new_result(
            task=task,
            id=task_id,
            status=TaskResultStatus(_text(fields, b"status") or ""),
            enqueued_at=_moment(use_tz, fields.get(b"enqueued_at")),
            started_at=started_at,
            finished_at=_moment(use_tz, fields.get(b"finished_at")),
            # Only a later attempt stores its own start; the first one's is started_at.
            last_attempted_at=started_at if last_attempt is None else _moment(use_tz, last_attempt),
            args=args,
            kwargs=kwargs,
            backend=backend or "",
            errors=errors,
            worker_ids=[str(w) for w in _json_list(fields, b"workers")],
        )
        if b"return" in fields:
            object.__setattr__(result, "_return_value", loads(fields[b"return"]))
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
