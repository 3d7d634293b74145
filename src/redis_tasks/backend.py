"""``RedisBackend``: the Django task backend that stores tasks and results in Redis."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from asgiref.sync import sync_to_async
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from . import signalling, signatures
from .compat import (
    BaseTaskBackend,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_enqueued,
)
from .exceptions import (
    ArgumentsNotSerializable,
    BackendUnavailable,
    InvalidTaskPayload,
    PayloadTooLarge,
)
from .limits import task_limits
from .options import BackendOptions, parse_options
from .schedules import Schedule, code_schedules
from .serialization import (
    dumps,
    from_ms,
    resolve_task,
    result_from_hash,
    to_us,
)
from .shims import django as django_shim
from .store import Enqueued, EnqueueRequest, TaskStore
from .task import RedisTask, validate_options


class _CallShape(NamedTuple):
    """What every call of one task shares, worked out once per ``enqueue_many``."""

    path: str
    queue: str
    priority: int
    run_after_us: int | None
    unique: bool
    max_attempts: int | None
    max_payload_bytes: int
    limited: bool  # a rate or concurrency limit of its own


class RedisBackend(BaseTaskBackend):  # type: ignore[misc,unused-ignore]
    task_class = RedisTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        parsed, self._config_errors = parse_options(alias, params)
        self.config: BackendOptions = parsed
        # Without QUEUES any queue name is accepted; an empty set disables the framework's check.
        self.queues = set(parsed.queues)
        self.store = TaskStore(alias, parsed)

    # --- configuration ------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [
            *super().check(**kwargs),
            *self._config_errors,
            *self._schedule_errors(),
            *self._commit_alias_errors(),
        ]

    def _commit_alias_errors(self) -> list[checks.CheckMessage]:
        from django.conf import settings

        alias = self.config.enqueue_on_commit
        if alias is None or alias in settings.DATABASES:
            return []
        return [checks.Error(
            f"TASKS[{self.alias!r}] option 'enqueue_on_commit' names database {alias!r}, "
            "which is not in DATABASES.",
            hint=f"Use one of {', '.join(settings.DATABASES)}, or True for 'default'.",
            id="redis_tasks.E002",
        )]  # fmt: skip

    def schedules(self) -> dict[str, Schedule]:
        """Periodic tasks of this backend: from its ``schedules`` option and from periodic()."""
        return {**code_schedules(self.alias), **self.config.schedules}

    def _schedule_errors(self) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        for schedule in self.schedules().values():
            try:
                resolve_task(schedule.task)
            except InvalidTaskPayload as exc:
                errors.append(checks.Error(
                    f"TASKS[{self.alias!r}] schedule {schedule.name!r}: {exc}.",
                    hint="Point 'task' at a function decorated with @task, by its dotted path.",
                    id="redis_tasks.E007",
                ))  # fmt: skip
        return errors

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        validate_options(task)

    def _ensure_configured(self) -> None:
        if self._config_errors:
            problems = "; ".join(f"{e.msg} {e.hint}" for e in self._config_errors)
            raise ImproperlyConfigured(f"{problems} (run `manage.py check` for details)")

    # --- enqueue ------------------------------------------------------------------------

    def _prepare(
        self, task: Any, args: Any, kwargs: Any, shape: _CallShape, task_id: str
    ) -> tuple[Any, EnqueueRequest]:
        """The result to hand back and the request to send, for one call of a task already
        validated (``prepare_many`` validates it once for all its calls)."""
        try:
            args = normalize_json(args) if args else []  # as the framework's TaskResult would
            kwargs = normalize_json(kwargs) if kwargs else {}
            args_json = dumps(args) if args else "[]"
            kwargs_json = dumps(kwargs) if kwargs else "{}"
        except (TypeError, ValueError, RecursionError) as exc:  # ValueError: bytes not UTF-8
            raise ArgumentsNotSerializable(
                f"Arguments of task {shape.path!r} cannot be stored as JSON: {exc}. "
                "Pass only JSON types (str, int, float, bool, None, lists, dicts with str keys, "
                "UTF-8 bytes), e.g. an object's primary key instead of the object. "
                "Nothing was queued."
            ) from exc
        text = args_json + kwargs_json
        size = len(text) if text.isascii() else len(text.encode())  # bytes, not characters
        if size > shape.max_payload_bytes:
            raise PayloadTooLarge(
                f"Arguments of task {shape.path!r} take {size} bytes as JSON, over the "
                f"backend's max_payload_bytes ({shape.max_payload_bytes}). Store large data "
                "elsewhere (a file, a model) and pass its key. Nothing was queued."
            )
        result = django_shim.new_result(
            task=task,
            id=task_id,
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        request = EnqueueRequest(
            result.id, shape.queue, shape.priority, shape.path, args_json, kwargs_json,
            shape.run_after_us,
            task.unique_key(args_json, kwargs_json, args, kwargs) if shape.unique else None,
            shape.max_attempts,
            signatures.sign(task_id, shape.path, args_json, kwargs_json)
            if self.config.sign_payloads else None,
            self._limits(task, args, kwargs) if shape.limited else None,
        )  # fmt: skip
        return result, request

    @staticmethod
    def _limits(task: Any, args: Any, kwargs: Any) -> str | None:
        try:
            return task_limits(task, args, kwargs)
        except ValueError as exc:
            raise InvalidTask(f"{exc}. Nothing was queued.") from exc

    def _shape(self, task: Any) -> _CallShape:
        """The task validated and its shape worked out, once per task: a ``Task`` is frozen,
        so neither can change. A loop of ``enqueue()`` calls of one task pays for them once."""
        try:
            return _kept_shape(self, task)
        except TypeError:  # a task with an unhashable option: worked out every time
            return _call_shape(self, task)

    def prepare_many(self, task: Any, calls: Iterable[Any]) -> tuple[list[Any], list[Any]]:
        """The results to hand back and the requests to send for calls of one task, validated
        and serialised but not sent (the enqueues, and the ticker's periodic ticks, send them)."""
        self._ensure_configured()
        shape = self._shape(task)  # once: every call is of the same task
        calls = calls if isinstance(calls, list) else list(calls)
        # Ids of 32 hex digits like Django's (50x faster than a uuid4 each), the random bytes
        # of the whole batch read in one call: one system call, not one per task.
        ids = os.urandom(16 * len(calls)).hex()
        results, requests = [], []
        for at, (args, kwargs) in enumerate(calls):
            task_id = ids[32 * at : 32 * at + 32]
            result, request = self._prepare(task, args, kwargs, shape, task_id)
            results.append(result)
            requests.append(request)
        return results, requests

    def in_commit_scope(self) -> bool:
        """Whether an enqueue now waits for a transaction's commit (``enqueue_on_commit``)."""
        alias = self.config.enqueue_on_commit
        return alias is not None and connections[alias].in_atomic_block

    def _stamp(self, results: list[Any], enqueued: Enqueued) -> list[tuple[Any, str | None]]:
        """Pair each result with the id of the existing unique task returned instead, if any;
        stamp the new ones with their enqueue time."""
        enqueued_at = from_ms(enqueued.now_ms)
        pairs = list(zip(results, enqueued.existing, strict=True))
        for result, existing in pairs:
            if existing is None:
                django_shim.update(result, enqueued_at=enqueued_at)
        return pairs

    def _send(self, results: list[Any], requests: list[Any]) -> list[Any]:
        if not self.config.tracing:
            return self._send_now(results, requests)
        from . import tracing

        with tracing.sending(requests[0].queue, [r.task_id for r in requests],
                             requests[0].path) as carried:  # fmt: skip
            return self._send_now(results, _carrying(requests, carried))

    async def _asend(self, results: list[Any], requests: list[Any]) -> list[Any]:
        if not self.config.tracing:
            return await self._asend_now(results, requests)
        from . import tracing

        with tracing.sending(requests[0].queue, [r.task_id for r in requests],
                             requests[0].path) as carried:  # fmt: skip
            return await self._asend_now(results, _carrying(requests, carried))

    def _send_now(self, results: list[Any], requests: list[Any]) -> list[Any]:
        try:
            enqueued = self.store.enqueue(requests)
        except BackendUnavailable as exc:
            ids = [r.task_id for r in requests]
            exc.for_enqueue(ids, resend=lambda: self._send_now(results, requests))
            raise
        if len(results) == 1 and enqueued.existing[0] is None:  # one new task: enqueue()
            django_shim.update(results[0], enqueued_at=from_ms(enqueued.now_ms))
            signalling.send_each(task_enqueued, type(self), "task_result", results)
            return results
        pairs = self._stamp(results, enqueued)
        found = {i: self.get_result(i) for _, i in pairs if i is not None}
        returned = [found[i] if i is not None else r for r, i in pairs]
        signalling.send_each(task_enqueued, type(self), "task_result", _new(pairs, returned))
        return returned

    async def _asend_now(self, results: list[Any], requests: list[Any]) -> list[Any]:
        try:
            enqueued = await self.store.aenqueue(requests)
        except BackendUnavailable as exc:
            ids = [r.task_id for r in requests]
            exc.for_enqueue(ids, aresend=lambda: self._asend_now(results, requests))
            raise
        pairs = self._stamp(results, enqueued)
        found = {i: await self.aget_result(i) for _, i in pairs if i is not None}
        returned = [found[i] if i is not None else r for r, i in pairs]
        for result in _new(pairs, returned):
            await signalling.asend(task_enqueued, type(self), task_result=result)
        return returned

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        return self.enqueue_many(task, [(args, kwargs)])[0]

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        return (await self.aenqueue_many(task, [(args, kwargs)]))[0]

    def enqueue_many(self, task: Any, calls: Iterable[tuple[Any, Any]]) -> list[Any]:
        """Enqueue many calls of one task in one round trip, all or none (``maxsize``).

        ``calls`` holds ``(args, kwargs)`` pairs. With ``enqueue_on_commit`` inside a
        transaction, they reach Redis when it commits, and never if it rolls back."""
        results, requests = self.prepare_many(task, calls)
        if not requests:
            return []
        if self.in_commit_scope():
            alias = self.config.enqueue_on_commit
            transaction.on_commit(lambda: self._send(results, requests), using=alias)
            return results
        return self._send(results, requests)

    async def aenqueue_many(self, task: Any, calls: Iterable[tuple[Any, Any]]) -> list[Any]:
        if (
            self.config.enqueue_on_commit is not None
            and await sync_to_async(self.in_commit_scope)()
        ):
            # Transactions belong to the sync thread that runs this context's database code.
            return await sync_to_async(self.enqueue_many)(task, list(calls))
        results, requests = self.prepare_many(task, calls)
        if not requests:
            return []
        return await self._asend(results, requests)

    # --- results ------------------------------------------------------------------------

    def _result(self, result_id: str, fields: dict[bytes, bytes]) -> Any:
        if not fields:
            raise TaskResultDoesNotExist(
                f"No result {result_id!r} in task backend {self.alias!r} (never enqueued here, "
                "or its result_ttl has passed)."
            )
        return result_from_hash(result_id, fields)

    def get_result(self, result_id: str) -> Any:
        self._ensure_configured()
        return self._result(result_id, self.store.read(result_id))

    async def aget_result(self, result_id: str) -> Any:
        self._ensure_configured()
        return self._result(result_id, await self.store.aread(result_id))


def _carrying(requests: list[Any], carried: str | None) -> list[Any]:
    """The requests with the trace context of their enqueue's span (tracing.py), if any."""
    return requests if carried is None else [r._replace(trace=carried) for r in requests]


def _new(pairs: list[tuple[Any, str | None]], returned: list[Any]) -> list[Any]:
    """The results of the tasks this call queued: not those an identical unique task stands
    for; those an earlier send of this very call queued are read back (their send was retried
    after a lost reply, see lib/enqueue_batch.lua)."""
    return [back for (sent, existing), back in zip(pairs, returned, strict=True)
            if existing is None or existing == sent.id]  # fmt: skip


def _call_shape(backend: RedisBackend, task: Any) -> _CallShape:
    backend.validate_task(task)
    return _CallShape(
        path=task.module_path,
        queue=task.queue_name,
        priority=task.priority,
        run_after_us=None if task.run_after is None else to_us(task.run_after),
        unique=isinstance(task, RedisTask) and task.unique not in (False, None),
        max_attempts=getattr(task, "max_attempts", None),
        max_payload_bytes=backend.config.max_payload_bytes,
        limited=getattr(task, "rate_limit", None) is not None
        or getattr(task, "concurrency_limit", None) is not None,
    )


_kept_shape = functools.lru_cache(maxsize=256)(_call_shape)


def redis_backends(aliases: Sequence[str] = ()) -> list[RedisBackend]:
    """The named RedisBackends, or every configured one."""
    if aliases:
        chosen = []
        for alias in aliases:
            if alias not in task_backends.settings:
                raise ImproperlyConfigured(
                    f"No task backend {alias!r} in settings.TASKS "
                    f"(configured: {', '.join(task_backends.settings) or 'none'})."
                )
            backend = task_backends[alias]
            if not isinstance(backend, RedisBackend):
                raise ImproperlyConfigured(
                    f"Task backend {alias!r} is a {type(backend).__name__}, not a RedisBackend."
                )
            chosen.append(backend)
        return chosen
    return [b for b in task_backends.all() if isinstance(b, RedisBackend)]
