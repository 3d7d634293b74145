"""Running one claimed task: its function, its signals, and storing its one outcome.

Sync tasks run whole in a worker thread (signals, database connection hygiene and the final
write included), so a slow receiver or task never blocks the event loop; async tasks run whole
on the loop with the asyncio client.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections

from .compat import TaskContext, TaskError, TaskResultStatus, task_finished, task_started
from .exceptions import ResultNotSerializable
from .serialization import dumps, error_json, from_ms, result_from_hash
from .store import Claim

if TYPE_CHECKING:
    from .backend import RedisBackend

logger = logging.getLogger("redis_tasks")


@dataclass
class Outcome:
    status: str
    return_json: str | None = None
    error: TaskError | None = None
    return_value: Any = None

    @property
    def error_json(self) -> str | None:
        if self.error is None:
            return None
        return error_json(self.error.exception_class_path, self.error.traceback)


def error_of(exc: BaseException) -> TaskError:
    cls = type(exc)
    return TaskError(
        exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
    )


def prepare(claim: Claim) -> Any:
    """The TaskResult of a claim; raises InvalidTaskPayload for anything that is not a task."""
    return result_from_hash(claim.task_id, claim.fields)


def is_async(result: Any) -> bool:
    return iscoroutinefunction(result.task.func)


def _call_args(result: Any) -> list[Any]:
    if result.task.takes_context:
        return [TaskContext(task_result=result), *result.args]
    return list(result.args)


def _succeeded(value: Any) -> Outcome:
    try:
        return Outcome(TaskResultStatus.SUCCESSFUL, return_json=dumps(value), return_value=value)
    except (TypeError, ValueError) as exc:
        try:
            raise ResultNotSerializable(
                f"the task returned {type(value).__name__}, which cannot be stored as JSON: {exc}"
            ) from exc
        except ResultNotSerializable as wrapped:
            return Outcome(TaskResultStatus.FAILED, error=error_of(wrapped))


def _record(result: Any, outcome: Outcome, finished_ms: int) -> None:
    """Mirror the stored outcome on the in-memory result handed to task_finished."""
    object.__setattr__(result, "status", outcome.status)
    object.__setattr__(result, "finished_at", from_ms(str(finished_ms)))
    if outcome.error is not None:
        result.errors.append(outcome.error)
    if outcome.status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", outcome.return_value)


def _log_rejected(claim: Claim) -> None:
    logger.warning(
        "Task %s: outcome discarded, this worker no longer holds its lease "
        "(another attempt owns the task now)",
        claim.task_id,
    )


async def fail_unrunnable(backend: RedisBackend, claim: Claim, exc: BaseException) -> None:
    """Store the failure of a claim that cannot be run at all (bad payload); run nothing."""
    logger.error("Task %s cannot be run: %s", claim.task_id, exc)
    outcome = Outcome(TaskResultStatus.FAILED, error=error_of(exc))
    await backend.store.afinish(claim, outcome.status, error_json=outcome.error_json)


def run_sync(backend: RedisBackend, claim: Claim, result: Any) -> None:
    """Run a sync task in the calling (worker) thread."""
    close_old_connections()
    try:
        task_started.send(sender=type(backend), task_result=result)
        try:
            outcome = _succeeded(result.task.func(*_call_args(result), **result.kwargs))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the task failed
            outcome = Outcome(TaskResultStatus.FAILED, error=error_of(exc))
    finally:
        close_old_connections()
    finished = backend.store.finish(claim, outcome.status, outcome.return_json, outcome.error_json)
    if not finished:
        _log_rejected(claim)
        return
    _record(result, outcome, finished)
    task_finished.send(sender=type(backend), task_result=result)


async def run_async(backend: RedisBackend, claim: Claim, result: Any) -> None:
    """Run an async task on the worker's event loop."""
    await task_started.asend(sender=type(backend), task_result=result)
    try:
        outcome = _succeeded(await result.task.func(*_call_args(result), **result.kwargs))
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker is cancelling this task; the lease brings it back
        outcome = Outcome(TaskResultStatus.FAILED, error=error_of(exc))
    except BaseException as exc:
        outcome = Outcome(TaskResultStatus.FAILED, error=error_of(exc))
    finished = await backend.store.afinish(
        claim, outcome.status, outcome.return_json, outcome.error_json
    )
    if not finished:
        _log_rejected(claim)
        return
    _record(result, outcome, finished)
    await task_finished.asend(sender=type(backend), task_result=result)
