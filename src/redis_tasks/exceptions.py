"""Exceptions a user of redis_tasks can meet, each naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class RedisTasksError(Exception):
    """Base class of every exception this package raises itself."""


class QueueFull(RedisTasksError):
    """An enqueue would make more tasks wait in the backend than its ``maxsize`` allows.

    Nothing was written: the task is not queued.
    """


class TaskExpired(RedisTasksError):
    """Recorded as the error of a task not dispatched within the backend's ``ttl``."""


class BackendUnavailable(RedisTasksError):
    """Redis could not be reached or answered with an error.

    Nothing was queued, unless ``maybe_applied``: the link dropped after the command was sent,
    so it ran wholly or not at all. For an enqueue, ``task_ids`` names the tasks sent and
    ``retry()`` (``aretry()`` from async code) sends the very same call again: an enqueue that
    meets its own ids answers with the tasks it queued, so a retry never queues a task twice.
    """

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.task_ids: list[str] = []
        self._resend: Callable[[], Any] | None = None
        self._aresend: Callable[[], Awaitable[Any]] | None = None

    def for_enqueue(
        self,
        task_ids: list[str],
        resend: Callable[[], Any] | None = None,
        aresend: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.task_ids, self._resend, self._aresend = task_ids, resend, aresend

    def retry(self) -> Any:
        """Send the failed enqueue again (same ids); returns its results (a list: one result
        for a single ``enqueue``)."""
        if self._resend is None:
            raise RuntimeError("Only a failed enqueue made from sync code can be retried this way.")
        return self._resend()

    async def aretry(self) -> Any:
        if self._aresend is None:
            raise RuntimeError("Only a failed aenqueue can be retried with aretry().")
        return await self._aresend()


class InvalidTaskPayload(RedisTasksError):
    """Recorded as the error of a task whose stored data cannot be run (not a registered task,
    a missing or mistyped field): the worker runs nothing for it."""


class ArgumentsNotSerializable(RedisTasksError, TypeError, ValueError):
    """Task arguments that cannot be stored as JSON; nothing was queued.

    Both a ``TypeError`` and a ``ValueError``: the framework raises the first for a value of a
    type JSON cannot hold and the second for ``bytes`` that are not UTF-8, and code written
    against it catches either."""


class InvalidSignature(InvalidTaskPayload):
    """Recorded as the error of a task whose payload signature is missing or wrong, with
    ``sign_payloads`` on: the worker runs nothing for it and moves its id to the dead-letter set."""


class WorkerLost(RedisTasksError):
    """Recorded as an error of an attempt whose worker stopped renewing its lease."""


class ChildProcessDied(RedisTasksError):
    """Recorded as an error of an isolated attempt whose child process died (a signal,
    ``os._exit``, the OOM killer); such an attempt is retried as one lost with its worker."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class WaitTimeout(RedisTasksError, TimeoutError):
    """A wait for a task (``redis_tasks.waiting``) ran out of time; the task goes on."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        super().__init__(
            f"task {task_id} did not finish within {timeout:g}s; it is still waiting or "
            "running (the wait ended, not the task)"
        )
        self.task_id = task_id


class ChordMemberFailed(RedisTasksError):
    """Recorded as the error of a chord's callback, which did not run: a member failed."""


class PayloadTooLarge(RedisTasksError, ValueError):
    """Task arguments larger than the backend's ``max_payload_bytes``; nothing was queued."""


class TaskCancelled(RedisTasksError):
    """Recorded as the error of a task an operator cancelled, waiting or running (a sync task
    raises it itself at its next ``redis_tasks.cancellation.check()``); never retried."""


class DurabilityNotConfirmed(RedisTasksError):
    """An enqueue with ``wait_replicas`` / ``wait_aof`` that Redis applied but fewer replicas
    (or no AOF fsync) confirmed within ``wait_timeout``.

    The tasks ARE queued on the master and will run unless it fails before they reach a
    replica; enqueueing them again would run them twice. ``task_ids`` lists them.
    """

    def __init__(self, message: str, task_ids: list[str]) -> None:
        super().__init__(message)
        self.task_ids = task_ids
