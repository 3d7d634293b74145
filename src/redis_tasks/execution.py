"""Running one claimed task's body, and settling its one outcome: success, failure, or a retry.

An async task's body runs on the worker's event loop, cancelled at its timeout; a sync task's in
the worker's threads (``threads.py``), given up on at its timeout (its thread is abandoned:
Python cannot stop a thread). Either way the outcome is settled from the loop, where the
finishes of many tasks share one trip to Redis (``batching.py``); receivers of the project's own
always run in a thread (``signalling.py``), so a slow receiver never blocks the loop. Every write
is owner-checked by its script, so whichever of a late thread, a timeout and a recovered lease
writes second changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
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

from . import cancellation, signalling, signatures, task_logs
from .calls import Claim
from .compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from .exceptions import ChildProcessDied, InvalidSignature, InvalidTaskPayload, TaskCancelled
from .isolation import RemoteError
from .serialization import dumps, error_json, from_ms, result_from_hash
from .shims import django as django_shim

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .capacity import Slots
    from .isolation import ChildPool
    from .threads import TaskThreads

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


DROPPED = "DROPPED"  # an outcome not to store: the claim's lease was lost before the body ran


@dataclass(frozen=True)
class Freshness:
    """How long a claim is trusted without asking Redis whether its lease still holds. A
    worker paused (SIGSTOP, a frozen VM) past its leases must not start a task it claimed
    before the pause: another worker owns it now."""

    received_at: float  # time.monotonic() when the claim's reply was read
    trusted_for: float  # seconds; past them, the lease is checked before the body runs

    def stale(self) -> bool:
        return time.monotonic() - self.received_at > self.trusted_for


def dropped() -> Outcome:
    return Outcome(DROPPED)


def cancelled() -> Outcome:
    """An operator's cancel of the running task: FAILED with TaskCancelled, never retried."""
    return failed(TaskCancelled("cancelled by an operator while it ran"))


def error_of(exc: BaseException) -> TaskError:
    if isinstance(exc, RemoteError):  # raised in an isolated child: as it was recorded there
        return TaskError(exception_class_path=exc.exception_class_path, traceback=exc.traceback)
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


def prepare(backend: Any, claim: Claim) -> Any:
    """The TaskResult of a claim; raises InvalidTaskPayload for anything that is not a task, or
    (``sign_payloads``) whose signature fails, before its path is even imported."""
    if backend is not None and backend.config.sign_payloads:
        signatures.verify(claim.task_id, claim.fields)
    return result_from_hash(claim.task_id, claim.fields)


def is_async(result: Any) -> bool:
    """Whether the task's function is a coroutine function (asked once per function: the
    inspection costs about as much as the rest of starting a no-op task's run)."""
    func = result.task.func
    try:
        return _is_coroutine_function(func)
    except TypeError:  # an unhashable callable: asked every time
        return iscoroutinefunction(func)


@functools.lru_cache(maxsize=4096)
def _is_coroutine_function(func: Any) -> bool:
    return iscoroutinefunction(func)


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
    if isinstance(exc, TaskCancelled) or (
        isinstance(exc, RemoteError)
        and exc.exception_class_path == "redis_tasks.exceptions.TaskCancelled"
    ):
        return None  # an operator's cancel is final
    if isinstance(exc, ChildProcessDied):  # as an attempt lost with its worker: tried again
        return 0.0
    paths = task.retry_paths(config.retry_on) if hasattr(task, "retry_paths") else config.retry_on
    raised: type[BaseException] = type(exc)
    if isinstance(exc, RemoteError):  # raised in an isolated child: its class, as named there
        raised = _exception_class(exc.exception_class_path)
    if not any(issubclass(raised, _exception_class(p)) for p in paths):
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
    django_shim.update(result, status=outcome.status, finished_at=from_ms(finished_ms))
    if outcome.exception is not None:
        result.errors.append(outcome.error)
    if outcome.status == TaskResultStatus.SUCCESSFUL:
        django_shim.set_return_value(result, outcome.return_value)


def _log_rejected(claim: Claim) -> None:
    logger.warning(
        "Task %s: outcome discarded, this worker no longer holds its lease "
        "(it was recovered, timed out or handed back; another attempt owns it)",
        claim.task_id,
    )


async def _with_retries(backend: RedisBackend, write: Callable[[], Awaitable[T]]) -> T:
    """Retry a write through a Redis outage for as long as the lease could still hold (every
    write of an outcome is safe to repeat: the scripts recognise their own earlier send)."""
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


async def settle(backend: RedisBackend, claim: Claim, result: Any, outcome: Outcome) -> str | None:
    """Store the outcome (or schedule a retry) and tell the receivers of ``task_finished``
    (a failure's inside an except block, so they see the exception in ``sys.exc_info()``).

    Returns the status stored, or None when a retry was scheduled or the write was rejected."""
    store = backend.store
    delay = retry_delay(backend, claim, result, outcome)
    error = None if outcome.error is None else error_json(*_error_pair(outcome.error))
    if delay is not None:
        if await _with_retries(backend, lambda: store.arequeue(claim, delay, error)):
            _log_retry(claim, result, outcome, delay)
        else:
            _log_rejected(claim)
        return None
    finished = await _with_retries(
        backend, lambda: store.afinish(claim, outcome.status, outcome.return_json, error)
    )
    if not finished:
        _log_rejected(claim)
        return None
    _record(result, outcome, finished)
    await signalling.asend(
        task_finished, type(backend), raising=outcome.exception, task_result=result
    )
    return outcome.status


def _error_pair(error: TaskError) -> tuple[str, str]:
    return error.exception_class_path, error.traceback


async def fail_unrunnable(backend: RedisBackend, claim: Claim, exc: BaseException) -> None:
    """Store the failure of a claim that cannot be run at all (bad payload); run nothing. One
    whose signature failed also goes to the dead-letter set, for an operator to look at."""
    logger.error("Task %s cannot be run: %s", claim.task_id, exc)
    if isinstance(exc, InvalidSignature):
        await backend.store.adead_letter(claim.task_id)
    error = error_of(exc)
    await _with_retries(
        backend,
        lambda: backend.store.afinish(
            claim, TaskResultStatus.FAILED, None, error_json(*_error_pair(error))
        ),
    )


# --- running --------------------------------------------------------------------------------


def call_sync(
    backend: RedisBackend, claim: Claim, result: Any, freshness: Freshness,
    cancel: threading.Event | None = None,
) -> Outcome:  # fmt: skip
    """Run a sync task's body in the calling (worker) thread: the part its timeout covers.
    ``cancel`` is what ``cancellation.check()`` answers from in the body."""
    if freshness.stale() and not backend.store.owns(claim):
        return dropped()
    if cancel is None:
        return _logged_sync_body(backend, claim, result, backend.config.tracing)
    token = cancellation.running_under(cancel)
    try:
        return _logged_sync_body(backend, claim, result, backend.config.tracing)
    finally:
        cancellation.done(token)


def _logged_sync_body(backend: Any, claim: Claim, result: Any, tracing_on: bool) -> Outcome:
    """The body in this thread, its log records marked with the task (``task_logs``) and,
    with tracing on, inside its consumer span (``tracing``)."""
    with task_logs.running(result):
        if not tracing_on:
            return _sync_body(backend, result)
        from . import tracing

        return tracing.traced(
            result, claim.fields.get(b"trace"), lambda: _sync_body(backend, result)
        )


def _sync_body(backend: Any, result: Any) -> Outcome:
    """A sync task's body, with ``task_started`` and database connection hygiene. A failing
    ``task_started`` receiver fails the task rather than leaving it to its lease."""
    close_old_connections()
    try:
        task_started.send(sender=_sender(backend), task_result=result)
        return _succeeded(result.task.func(*_call_args(result), **result.kwargs))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the task failed
        return failed(exc)
    finally:
        close_old_connections()


def _sender(backend: Any) -> type:
    """The sender of the framework's signals: the backend's class."""
    return backend if isinstance(backend, type) else type(backend)


def isolate(backend: RedisBackend, result: Any) -> bool:
    """Whether the task runs in a child process: it asks to (its ``isolated`` option, or its
    backend's), or its previous attempt ended with its worker (or its child) lost."""
    if getattr(result.task, "isolated", False) or backend.config.isolated:
        return True
    return bool(result.errors) and result.errors[-1].exception_class_path in LOST_ATTEMPT


LOST_ATTEMPT = ("redis_tasks.exceptions.WorkerLost", "redis_tasks.exceptions.ChildProcessDied")


async def run_isolated(
    backend: RedisBackend, claim: Claim, result: Any, freshness: Freshness, children: ChildPool
) -> Outcome:
    """Run the task's body in a child process (``isolation.py``), killed at its timeout."""

    async def still_ours() -> bool:
        return not freshness.stale() or await backend.store.aowns(claim)

    return await children.run(
        claim, timeout_of(backend, result), backend.config.isolation_memory_limit, still_ours,
        failed, timed_out, _stored, dropped,
    )  # fmt: skip


def _stored(return_json: str, value: Any) -> Outcome:
    return Outcome(TaskResultStatus.SUCCESSFUL, return_json=return_json, return_value=value)


def run_here(claim: Claim) -> Outcome:
    """The body of a claimed task in this very process, as an isolated child runs it (its
    parent holds the lease and the timeout, and stores the outcome)."""
    from .backend import RedisBackend

    try:
        result = prepare(None, claim)  # (its parent checked its signature)
    except InvalidTaskPayload as exc:
        return failed(exc)
    tracing_on = _tracing_on(result.backend)
    if not is_async(result):
        return _logged_sync_body(RedisBackend, claim, result, tracing_on)

    async def body() -> Outcome:
        try:
            await signalling.asend(task_started, RedisBackend, task_result=result)
            return _succeeded(await result.task.func(*_call_args(result), **result.kwargs))
        except BaseException as exc:
            return failed(exc)

    async def logged() -> Outcome:
        task_logs.enter(result)
        if not tracing_on:
            return await body()
        from . import tracing

        return await tracing.atraced(result, claim.fields.get(b"trace"), body)

    try:
        return asyncio.run(logged())
    except BaseException as exc:
        return failed(exc)


def _tracing_on(alias: str) -> bool:
    from .compat import task_backends

    try:
        config = getattr(task_backends[alias], "config", None)
    except Exception:  # no such backend here: run untraced rather than not at all
        return False
    return bool(config is not None and config.tracing)


async def run_sync(
    backend: RedisBackend, claim: Claim, result: Any, freshness: Freshness,
    threads: TaskThreads, slots: Slots, cancel: threading.Event | None = None,
) -> Outcome:  # fmt: skip
    """Run a sync task's body in the worker's threads, for at most its timeout. Past it, or
    when the worker is shutting down (cancelled), the thread is abandoned: its late outcome is
    dropped and ``slots`` counts it until it returns."""
    timeout = timeout_of(backend, result)
    body = threads.submit(call_sync, backend, claim, result, freshness, cancel)
    try:
        return await _within(body, timeout)
    except asyncio.CancelledError:
        _abandon(threads, slots, body)
        raise
    except TimeoutError:
        _abandon(threads, slots, body)
        logger.error("Task %s ran past its %ss timeout; its thread is abandoned",
                     result.id, timeout)  # fmt: skip
        return timed_out(timeout or 0)


def _abandon(threads: TaskThreads, slots: Slots, body: asyncio.Future[Any]) -> None:
    slots.abandoned()  # counted first: the thread may return at once
    if not threads.abandon(body, slots.thread_returned):
        slots.thread_returned()  # it had returned already


async def _within(call: asyncio.Future[T], timeout: float | None) -> T:
    """A thread's call, awaited for at most ``timeout`` seconds (TimeoutError after it). The
    timeout must not cancel the call's future, which is shielded; with no timeout the future is
    awaited bare (no timer, no shield per task), and a cancel reaches it, which changes
    nothing: its thread runs on either way, and its late result is dropped (``_abandon``)."""
    if timeout is None:
        return await call
    return await asyncio.wait_for(asyncio.shield(call), timeout)


async def run_async(
    backend: RedisBackend, claim: Claim, result: Any, freshness: Freshness
) -> Outcome:
    """Run an async task's body (and ``task_started``) on the worker's event loop, cancelled at
    its timeout."""
    if freshness.stale() and not await backend.store.aowns(claim):
        return dropped()
    if not backend.config.tracing:
        return await _async_body(backend, result)
    from . import tracing

    return await tracing.atraced(
        result, claim.fields.get(b"trace"), lambda: _async_body(backend, result)
    )


async def _async_body(backend: RedisBackend, result: Any) -> Outcome:
    timeout = timeout_of(backend, result)
    deadline = None if timeout is None else asyncio.timeout(timeout)
    try:
        await signalling.asend(task_started, type(backend), task_result=result)
        if deadline is None:  # no limit: no timer to set up and cancel per task
            value = await result.task.func(*_call_args(result), **result.kwargs)
        else:
            async with deadline:
                value = await result.task.func(*_call_args(result), **result.kwargs)
        return _succeeded(value)
    except TimeoutError as exc:
        expired = timeout is not None and deadline is not None and deadline.expired()
        return timed_out(timeout, exc) if expired and timeout is not None else failed(exc)
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker is shutting down: it hands the task back
        return failed(exc)
    except BaseException as exc:
        return failed(exc)
