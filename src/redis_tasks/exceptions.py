"""Exceptions a user of redis_tasks can meet, each naming the problem and the fix."""

from __future__ import annotations


class RedisTasksError(Exception):
    """Base class of every exception this package raises itself."""


class QueueFull(RedisTasksError):
    """An enqueue would make more tasks wait in the backend than its ``maxsize`` allows.

    Nothing was written: the task is not queued.
    """


class TaskExpired(RedisTasksError):
    """Recorded as the error of a task not dispatched within the backend's ``ttl``."""


class BackendUnavailable(RedisTasksError):
    """Redis could not be reached or answered with an error; nothing was queued."""


class InvalidTaskPayload(RedisTasksError):
    """Recorded as the error of a task whose stored data cannot be run (not a registered task,
    a missing or mistyped field): the worker runs nothing for it."""


class ArgumentsNotSerializable(RedisTasksError, TypeError, ValueError):
    """Task arguments that cannot be stored as JSON; nothing was queued.

    Both a ``TypeError`` and a ``ValueError``: the framework raises the first for a value of a
    type JSON cannot hold and the second for ``bytes`` that are not UTF-8, and code written
    against it catches either."""


class WorkerLost(RedisTasksError):
    """Recorded as an error of an attempt whose worker stopped renewing its lease."""


class PayloadTooLarge(RedisTasksError, ValueError):
    """Task arguments larger than the backend's ``max_payload_bytes``; nothing was queued."""


class TaskCancelled(RedisTasksError):
    """Recorded as the error of a waiting task that an operator cancelled."""


class DurabilityNotConfirmed(RedisTasksError):
    """An enqueue with ``wait_replicas`` / ``wait_aof`` that Redis applied but fewer replicas
    (or no AOF fsync) confirmed within ``wait_timeout``.

    The tasks ARE queued on the master and will run unless it fails before they reach a
    replica; enqueueing them again would run them twice. ``task_ids`` lists them.
    """

    def __init__(self, message: str, task_ids: list[str]) -> None:
        super().__init__(message)
        self.task_ids = task_ids
