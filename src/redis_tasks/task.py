"""``RedisTask``: the framework's ``Task`` with per-task reliability options.

``RedisBackend.task_class`` is this class, so on Django 6.1 and with the django-tasks backport the
framework's own decorator accepts the options: ``@task(max_attempts=5, retry_on=[IOError],
timeout=30, backoff=fn)``. Django 6.0's decorator forwards no extra arguments; there, use
``redis_tasks.task.task`` (same signature) or the backend-wide defaults in settings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .compat import DEFAULT_TASK_QUEUE_NAME, InvalidTask, Task, task_backends
from .limits import check_concurrency, parse_rate
from .options import exception_path

DEFAULT_BACKEND_ALIAS = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTask(Task):  # type: ignore[misc,type-arg,unused-ignore]
    max_attempts: int | None = None  # None: the backend's max_attempts
    retry_on: tuple[Any, ...] | None = None  # exception classes or paths; None: see retry_paths()
    retry_backoff: float | None = None  # first retry delay in seconds; None: the backend's
    timeout: float | None = None  # seconds an attempt may run; None: the backend's
    # Enqueue at most one queued-or-running task per key: True (the call's arguments), a
    # fixed string, or a callable given the call's arguments that returns the key.
    unique: bool | str | Callable[..., Any] = False
    # backoff(exception, task_result) -> seconds before the next attempt, or None: no more
    # attempts (the shape of Django's retry proposal); None here: retry_backoff's doubling.
    backoff: Callable[[BaseException, Any], float | None] | None = None
    isolated: bool = False  # run each attempt in a child process of its own (isolation.py)
    # Flow control across every worker (limits.py): "100/m"; tasks at once; per argument value.
    rate_limit: str | None = None
    concurrency_limit: int | None = None
    limit_key: str | None = None

    def unique_key(self, args_json: str, kwargs_json: str, args: Any, kwargs: Any) -> str | None:
        if self.unique is False or self.unique is None:
            return None
        if self.unique is True:  # kwargs in any order are the same call
            kwargs_canonical = json.dumps(kwargs, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(f"{args_json}\0{kwargs_canonical}".encode()).hexdigest()[:32]
            return f"{self.module_path}:{digest}"
        if callable(self.unique):
            return f"{self.module_path}:{self.unique(*args, **kwargs)}"
        return f"{self.module_path}:{self.unique}"

    def retry_paths(self, backend_default: tuple[str, ...]) -> tuple[str, ...]:
        """Exceptions that earn another attempt. Setting ``max_attempts`` or ``backoff`` on a
        task without ``retry_on`` opts it in for every ``Exception``; otherwise the backend's
        list applies."""
        if self.retry_on is not None:
            return tuple(p for p in (exception_path(e) for e in self.retry_on) if p)
        if self.max_attempts is not None or self.backoff is not None:
            return ("builtins.Exception",)
        return backend_default


def validate_options(task: Any) -> None:
    """Raise InvalidTask for a RedisTask option that cannot work (called at decoration)."""
    if not isinstance(task, RedisTask):
        return
    if task.max_attempts is not None and (
        type(task.max_attempts) is not int or task.max_attempts < 1
    ):
        raise InvalidTask(f"max_attempts must be a positive integer, not {task.max_attempts!r}.")
    for name in ("retry_backoff", "timeout"):
        value = getattr(task, name)
        if value is not None and (type(value) not in (int, float) or value <= 0):
            raise InvalidTask(f"{name} must be a positive number of seconds, not {value!r}.")
    _validate_limits(task)
    if not isinstance(task.isolated, bool):
        raise InvalidTask(f"isolated must be True or False, not {task.isolated!r}.")
    if task.backoff is not None and not callable(task.backoff):
        raise InvalidTask(
            f"backoff must be a function (exception, task_result) -> seconds or None, not "
            f"{task.backoff!r}."
        )
    if not (isinstance(task.unique, bool | str) or callable(task.unique)):
        raise InvalidTask("unique must be True, a key string, or a callable returning a key.")
    if task.retry_on is not None:
        if not isinstance(task.retry_on, list | tuple):
            raise InvalidTask("retry_on must be a list of exception classes or dotted paths.")
        bad = [e for e in task.retry_on if exception_path(e) is None]
        if bad:
            raise InvalidTask(f"retry_on has {bad!r}, which are not exception classes.")


def _validate_limits(task: RedisTask) -> None:
    try:
        if task.rate_limit is not None:
            parse_rate(task.rate_limit)
        if task.concurrency_limit is not None:
            check_concurrency(task.concurrency_limit)
    except ValueError as exc:
        raise InvalidTask(f"{exc}.") from exc
    if task.limit_key is None:
        return
    if task.rate_limit is None and task.concurrency_limit is None:
        raise InvalidTask("limit_key needs a rate_limit or a concurrency_limit to apply to.")
    if task.limit_key not in inspect.signature(task.func).parameters:
        raise InvalidTask(
            f"limit_key {task.limit_key!r} is not an argument of {task.func.__qualname__}."
        )


def task(
    function: Callable[..., Any] | None = None,
    *,
    priority: int = 0,
    queue_name: str = DEFAULT_TASK_QUEUE_NAME,
    backend: str = DEFAULT_BACKEND_ALIAS,
    takes_context: bool = False,
    max_attempts: int | None = None,
    retry_on: Sequence[Any] | None = None,
    retry_backoff: float | None = None,
    timeout: float | None = None,
    unique: bool | str | Callable[..., Any] = False,
    backoff: Callable[[BaseException, Any], float | None] | None = None,
    isolated: bool = False,
    rate_limit: str | None = None,
    concurrency_limit: int | None = None,
    limit_key: str | None = None,
) -> Any:
    """The framework's ``@task`` with the reliability options, on every Django version."""

    def wrapper(func: Callable[..., Any]) -> Any:
        task_class: Any = task_backends[backend].task_class
        return task_class(
            func=func,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
            run_after=None,
            max_attempts=max_attempts,
            retry_on=None if retry_on is None else tuple(retry_on),
            retry_backoff=retry_backoff,
            timeout=timeout,
            unique=unique,
            backoff=backoff,
            isolated=isolated,
            rate_limit=rate_limit,
            concurrency_limit=concurrency_limit,
            limit_key=limit_key,
        )

    return wrapper(function) if function is not None else wrapper
