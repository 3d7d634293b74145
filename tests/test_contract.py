"""Django's own contract, as its ImmediateBackend keeps it: return values and arguments
normalised as the framework normalises them, results read back equal to what enqueue returned,
QUEUES = [] as "any queue", and retries in the shape of Django's proposal (``backoff``)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from redis_tasks.compat import TaskResultStatus, task_backends, task_finished
from redis_tasks.exceptions import ArgumentsNotSerializable
from tests import tasks
from tests.helpers import burst


def finished(result: Any) -> Any:
    burst()
    result.refresh()
    return result


@pytest.mark.parametrize(
    ("kind", "stored"),
    [("bytes", "café"), ("tuple", [1, 2]), ("nested", {"k": ["v", [[1]]]})],
)
def test_return_values_are_normalised_as_the_framework_does(kind: str, stored: Any) -> None:
    immediate = tasks.returns.using(backend="immediate").enqueue(kind)
    result = finished(tasks.returns.enqueue(kind))
    assert result.status == immediate.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == immediate.return_value == stored


def test_a_nan_return_value_is_stored() -> None:
    result = finished(tasks.returns.enqueue("nan"))
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert math.isnan(result.return_value)


def test_a_return_value_json_cannot_hold_fails_with_the_frameworks_error() -> None:
    result = finished(tasks.unserializable_return.enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_task_finished_receivers_get_the_stored_value() -> None:
    seen = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(task_result.return_value)

    task_finished.connect(receiver)
    try:
        finished(tasks.returns.enqueue("tuple"))
    finally:
        task_finished.disconnect(receiver)
    assert seen == [[1, 2]]


def test_a_deferred_result_reads_back_equal_to_what_enqueue_returned() -> None:
    later = timezone.now() + timedelta(hours=1, microseconds=21)
    result = tasks.add.using(run_after=later).enqueue(1, 2)
    assert result.task.run_after == later
    assert task_backends["default"].get_result(result.id) == result


def test_arguments_are_normalised_and_nan_is_accepted() -> None:
    result = tasks.echo.enqueue(float("nan"), b"caf\xc3\xa9", (1, 2), key=(3,))
    stored = task_backends["default"].get_result(result.id)
    assert math.isnan(stored.args[0]) and stored.args[1:] == ["café", [1, 2]]
    assert stored.kwargs == {"key": [3]}
    with pytest.raises(ValueError):  # what the framework raises for bytes that are not UTF-8
        tasks.echo.enqueue(b"\xff")
    with pytest.raises(TypeError):  # ... and for a type JSON cannot hold
        tasks.echo.enqueue(object())
    with pytest.raises(ArgumentsNotSerializable):  # both are this package's own error too
        tasks.echo.enqueue(b"\xff")


def test_empty_QUEUES_accepts_any_queue_name(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "redis_tasks.backend.RedisBackend",
                                  "LOCATION": task_backends["default"].config.location,
                                  "QUEUES": []}}  # fmt: skip
    backend = task_backends["default"]
    assert list(backend.check()) == []
    result = tasks.add.using(queue_name="anything-goes").enqueue(1, 2)
    assert backend.get_result(result.id).task.queue_name == "anything-goes"


def test_backoff_decides_the_delay_per_error() -> None:
    throttled = finished(tasks.http_call.enqueue(429, 2))  # retried: 429 asks for 10 ms
    for _ in range(5):
        if throttled.status != TaskResultStatus.READY:
            break
        throttled = finished(throttled)
    assert throttled.status == TaskResultStatus.SUCCESSFUL and throttled.return_value == 3
    assert len(throttled.errors) == 2
    missing = finished(tasks.http_call.enqueue(404, 2))  # backoff says None: no retry
    assert missing.status == TaskResultStatus.FAILED and missing.attempts == 1


def test_backoff_applies_only_to_what_retry_on_lets_through() -> None:
    retried = tasks.backoff_within_retry_on.enqueue("key")
    for _ in range(5):
        retried = finished(retried)
    assert retried.status == TaskResultStatus.FAILED and retried.attempts == 3
    final = finished(tasks.backoff_within_retry_on.enqueue("value"))
    assert final.status == TaskResultStatus.FAILED and final.attempts == 1


def test_backoff_must_be_a_function() -> None:
    from redis_tasks.compat import InvalidTask
    from redis_tasks.task import task

    with pytest.raises(InvalidTask, match="backoff must be a function"):
        task(backoff=5)(tasks.add.func)
