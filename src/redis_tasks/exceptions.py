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


class ResultNotSerializable(RedisTasksError):
    """Recorded as the error of a task whose return value cannot be stored as JSON."""


class ArgumentsNotSerializable(RedisTasksError, TypeError):
    """Task arguments that cannot be stored as JSON; nothing was queued."""


class WorkerLost(RedisTasksError):
    """Recorded as an error of an attempt whose worker stopped renewing its lease."""


class PayloadTooLarge(RedisTasksError, ValueError):
    """Task arguments larger than the backend's ``max_payload_bytes``; nothing was queued."""


class TaskCancelled(RedisTasksError):
    """Recorded as the error of a waiting task that an operator cancelled."""
