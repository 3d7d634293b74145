"""Running one claimed task and settling its one outcome: success, failure, or a retry.

A sync task's body (with ``task_started`` and database connection hygiene) runs in a worker
thread and an async task's on the loop. Outcomes are stored from the loop, where the finishes of
many tasks share one trip to Redis (``batching.py``), except where no other finish is coming
to share it (``CallThenSettle``); receivers of the project's own always run
in a thread (``signalling.py``), so a slow receiver never blocks the loop. Every write is
owner-checked by its script, so whichever of a late thread, a timeout and a recovered lease
writes second changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from django.db import close_old_connections
from django.utils.module_loading import import_string

from . import signalling
from .compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from .serialization import dumps, error_json, from_ms, result_from_hash
from .store import Claim

if TYPE_CHECKING:
    from .backend import RedisBackend

logger = logging.getLogger("redis_tasks")
T = TypeVar("T")
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError)


@dataclass
class Outcome:
    status: str
    return_json: str | None = None
    exception: BaseException | None = None
    return_value: Any = None

    @property
    def error(self) -> TaskError | None:
        return None if self.exception is None else error_of(self.exception)


def error_of(exc: BaseException) -> TaskError:
    cls = type(exc)
    return TaskError(
        exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
    )


def failed(exc: BaseException) -> Outcome:
    return Outcome(TaskResultStatus.FAILED, exception=exc)


def timed_out(seconds: float, cause: BaseException | None = None) -> Outcome:
    try:
        raise TimeoutError(f"the task ran past its timeout of {seconds:g}s") from cause
    except TimeoutError as exc:
        return failed(exc)


def prepare(claim: Claim) -> Any:
    """The TaskResult of a claim; raises InvalidTaskPayload for anything that is not a task."""
    return result_from_hash(claim.task_id, claim.fields)


_coroutine_functions: dict[Any, bool] = {}


def is_async(result: Any) -> bool:
    """Whether the task's function is a coroutine function; asked once per function (the
    inspection costs about as much as the rest of starting a no-op task's run)."""
    func = result.task.func
    try:
        known = _coroutine_functions.get(func)
    except TypeError:  # an unhashable callable: asked every time
        return iscoroutinefunction(func)
    if known is None:
        known = iscoroutinefunction(func)
        if len(_coroutine_functions) < 10_000:  # bounded, as the resolved paths are
            _coroutine_functions[func] = known
    return known


def timeout_of(backend: RedisBackend, result: Any) -> float | None:
    return getattr(result.task, "timeout", None) or backend.config.timeout


def _call_args(result: Any) -> list[Any]:
    if result.task.takes_context:
        return [TaskContext(task_result=result), *result.args]
    return list(result.args)


def _succeeded(value: Any) -> Outcome:
    """The outcome of a body that returned ``value``, normalised as the framework normalises
    it (tuples to lists, bytes to text...): what is stored is what ``task_finished`` receivers
    and later readers see. A value the framework cannot normalise fails the task with the
    framework's own ``TypeError`` (or ``ValueError``)."""
    if value is None:  # what most tasks return: no normalising or encoding needed
        return Outcome(TaskResultStatus.SUCCESSFUL, return_json="null")
    try:
        value = normalize_json(value)
        return Outcome(TaskResultStatus.SUCCESSFUL, return_json=dumps(value), return_value=value)
    except (TypeError, ValueError, RecursionError) as exc:
        return failed(exc)


# --- retry policy ---------------------------------------------------------------------------


def attempts_counted(claim: Claim, result: Any) -> int:
    """Attempts that count against max_attempts: starts less graceful hand-backs."""
    return int(result.attempts) - int(claim.fields.get(b"uncounted", b"0"))


def retry_delay(backend: RedisBackend, claim: Claim, result: Any, outcome: Outcome) -> float | None:
    """Seconds until the next attempt, or None when this outcome is final.

    A task's ``backoff(exception, task_result)`` decides the delay (None: no more attempts);
    without it, exponential backoff with jitter: base * 2^(attempt-1), capped, times a random
    factor in [0.5, 1.5) so that tasks failing together do not retry together. Either way only
    an ``Exception`` that ``retry_on`` lets through is retried, while attempts are left.
    """
    exc = outcome.exception
    if outcome.status != TaskResultStatus.FAILED or exc is None or not isinstance(exc, Exception):
        return None  # SystemExit, KeyboardInterrupt and the like are never retried
    task, config = result.task, backend.config
    max_attempts = getattr(task, "max_attempts", None) or config.max_attempts
    attempt = attempts_counted(claim, result)
    if attempt >= max_attempts:
        return None
    paths = task.retry_paths(config.retry_on) if hasattr(task, "retry_paths") else config.retry_on
    if not any(isinstance(exc, _exception_class(p)) for p in paths):
        return None
    backoff = getattr(task, "backoff", None)
    if backoff is not None:
        return _asked_delay(backoff, exc, result)
    base = getattr(task, "retry_backoff", None) or config.retry_backoff
    delay = min(base * 2 ** (attempt - 1), config.retry_backoff_max)
    return float(min(delay * random.uniform(0.5, 1.5), config.retry_backoff_max))


def _asked_delay(backoff: Callable[..., Any], exc: Exception, result: Any) -> float | None:
    """What the task's own ``backoff`` asks for: seconds (0 or more), or None. A backoff that
    raises or answers anything else ends the retries, with a log line saying why."""
    try:
        delay = backoff(exc, result)
    except Exception:
        logger.exception("Task %s: its backoff function failed; no retry", result.id)
        return None
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
        logger.error(
            "Task %s: its backoff function returned %r, not seconds (a number, 0 or more) or "
            "None; no retry", result.id, delay,
        )  # fmt: skip
        return None
    return float(delay)


def _exception_class(path: str) -> type[BaseException]:
    try:
        cls = import_string(path)
    except ImportError:
        return _Never
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else _Never


class _Never(Exception):
    """Stands for a retry_on path that does not import: matches nothing."""


# --- settling -------------------------------------------------------------------------------


def _record(result: Any, outcome: Outcome, finished_ms: int) -> None:
    """Mirror the stored outcome on the in-memory result handed to task_finished."""
    object.__setattr__(result, "status", outcome.status)
    object.__setattr__(result, "finished_at", from_ms(finished_ms))
    if outcome.exception is not None:
        result.errors.append(outcome.error)
    if outcome.status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", outcome.return_value)


def _log_rejected(claim: Claim) -> None:
    logger.warning(
        "Task %s: outcome discarded, this worker no longer holds its lease "
        "(it was recovered, timed out or handed back; another attempt owns it)",
        claim.task_id,
    )


def _finished_signal(backend: RedisBackend, result: Any, outcome: Outcome) -> None:
    # Sent inside an except block when the task failed, so receivers (the framework's logger,
    # error trackers) see the exception in sys.exc_info(). From a worker thread, with the
    # database connections its receivers open closed after them.
    if outcome.exception is None:
        signalling.send_and_close(task_finished, type(backend), task_result=result)
        return
    try:
        raise outcome.exception
    except BaseException:
        signalling.send_and_close(task_finished, type(backend), task_result=result)


async def _afinished_signal(backend: RedisBackend, result: Any, outcome: Outcome) -> None:
    if outcome.exception is None:
        await signalling.asend(task_finished, sender=type(backend), task_result=result)
        return
    try:
        raise outcome.exception
    except BaseException:
        await signalling.asend(task_finished, sender=type(backend), task_result=result)


def _with_retries(backend: RedisBackend, write: Callable[[], T]) -> T:
    """Retry a write through a Redis outage for as long as the lease could still hold."""
    deadline = time.monotonic() + backend.config.lease_timeout
    pause = 0.1
    while True:
        try:
            return write()
        except OUTAGE_ERRORS as exc:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("Redis unavailable (%s); retrying in %.1fs", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


async def _awith_retries(backend: RedisBackend, write: Callable[[], Awaitable[T]]) -> T:
    deadline = time.monotonic() + backend.config.lease_timeout
    pause = 0.1
    while True:
        try:
            return await write()
        except OUTAGE_ERRORS as exc:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("Redis unavailable (%s); retrying in %.1fs", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def _log_retry(claim: Claim, result: Any, outcome: Outcome, delay: float) -> None:
    logger.info(
        "Task %s attempt %d failed with %s; retrying in %.1fs",
        claim.task_id, result.attempts, type(outcome.exception).__name__, delay,
    )  # fmt: skip


def settle(backend: RedisBackend, claim: Claim, result: Any, outcome: Outcome) -> str | None:
    """Store the outcome (or schedule a retry) and tell the receivers; sync twin.

    Returns the status stored, or None when a retry was scheduled or the write was rejected."""
    store = backend.store
    delay = retry_delay(backend, claim, result, outcome)
    error = None if outcome.error is None else error_json(*_error_pair(outcome.error))
    if delay is not None:
        if _with_retries(backend, lambda: store.requeue(claim, delay, error)):
            _log_retry(claim, result, outcome, delay)
        else:
            _log_rejected(claim)
        return None
    finished = _with_retries(
        backend, lambda: store.finish(claim, outcome.status, outcome.return_json, error)
    )
    if not finished:
        _log_rejected(claim)
        return None
    _record(result, outcome, finished)
    _finished_signal(backend, result, outcome)
    return outcome.status


async def asettle(backend: RedisBackend, claim: Claim, result: Any, outcome: Outcome) -> str | None:
    """Store the outcome (or schedule a retry) and tell the receivers; async twin."""
    store = backend.store
    delay = retry_delay(backend, claim, result, outcome)
    error = None if outcome.error is None else error_json(*_error_pair(outcome.error))
    if delay is not None:
        if await _awith_retries(backend, lambda: store.arequeue(claim, delay, error)):
            _log_retry(claim, result, outcome, delay)
        else:
            _log_rejected(claim)
        return None
    finished = await _awith_retries(
        backend, lambda: store.afinish(claim, outcome.status, outcome.return_json, error)
    )
    if not finished:
        _log_rejected(claim)
        return None
    _record(result, outcome, finished)
    await _afinished_signal(backend, result, outcome)
    return outcome.status


def _error_pair(error: TaskError) -> tuple[str, str]:
    return error.exception_class_path, error.traceback


async def fail_unrunnable(backend: RedisBackend, claim: Claim, exc: BaseException) -> None:
    """Store the failure of a claim that cannot be run at all (bad payload); run nothing."""
    logger.error("Task %s cannot be run: %s", claim.task_id, exc)
    error = error_of(exc)
    await _awith_retries(
        backend,
        lambda: backend.store.afinish(
            claim, TaskResultStatus.FAILED, None, error_json(*_error_pair(error))
        ),
    )


# --- running --------------------------------------------------------------------------------


def call_sync(backend: RedisBackend, result: Any) -> Outcome:
    """Run a sync task's body in the calling (worker) thread: the part its timeout covers.

    A failing ``task_started`` receiver fails the task rather than leaving it to its lease."""
    close_old_connections()
    try:
        task_started.send(sender=type(backend), task_result=result)
        return _succeeded(result.task.func(*_call_args(result), **result.kwargs))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the task failed
        return failed(exc)
    finally:
        close_old_connections()


class CallThenSettle:
    """A sync task's body and then its settling, as one call in one worker thread.

    For a task claimed alone (its claim found the queues dry, and the worker runs nothing else):
    no other finish is on its way to share a trip with, so storing the outcome from the thread
    (down the sync direct lane) saves the hop back to the loop and the loop's own trip. Many
    tasks are settled from the loop instead, in shared trips: one sync trip (and connection)
    per thread would cost more than it saves. The loop's timeout still covers the body alone: once
    the loop gives up on a body still running (``give_up``), the body's late outcome is dropped
    unstored, as for any abandoned thread."""

    def __init__(self, backend: RedisBackend, claim: Claim, result: Any) -> None:
        self.backend, self.claim, self.result = backend, claim, result
        self._lock = threading.Lock()
        self._body_over = False
        self._given_up = False

    def __call__(self) -> str | None:
        outcome = call_sync(self.backend, self.result)
        with self._lock:
            if self._given_up:
                return None
            self._body_over = True
        return settle(self.backend, self.claim, self.result, outcome)

    def give_up(self) -> bool:
        """Drop the outcome of a body still running; False if the body is over (then only the
        settling is under way, and it goes on)."""
        with self._lock:
            if self._body_over:
                return False
            self._given_up = True
            return True


async def run_async(
    backend: RedisBackend, claim: Claim, result: Any, body_done: Callable[[], None] | None = None
) -> str | None:
    """Run an async task on the worker's event loop, cancelled at its timeout, then settle it
    (``body_done`` is called in between)."""
    timeout = timeout_of(backend, result)
    deadline = None if timeout is None else asyncio.timeout(timeout)
    try:
        await signalling.asend(task_started, sender=type(backend), task_result=result)
        if deadline is None:  # no limit: no timer to set up and cancel per task
            value = await result.task.func(*_call_args(result), **result.kwargs)
        else:
            async with deadline:
                value = await result.task.func(*_call_args(result), **result.kwargs)
        outcome = _succeeded(value)
    except TimeoutError as exc:
        expired = timeout is not None and deadline is not None and deadline.expired()
        outcome = timed_out(timeout, exc) if expired and timeout is not None else failed(exc)
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker is shutting down: it hands the task back
        outcome = failed(exc)
    except BaseException as exc:
        outcome = failed(exc)
    if body_done is not None:
        body_done()
    return await asettle(backend, claim, result, outcome)
