"""Observability (issue 20): OpenTelemetry spans from enqueue to run, across a real worker
process and a retry; nothing stored or recorded with tracing off; workflow steps and periodic
ticks get their parents; each task's log records carry its id, path, attempt and backend."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry import trace

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus
from redis_tasks.keys import Keys
from redis_tasks.task_logs import TaskFieldsFilter
from redis_tasks.ticker import Ticker
from redis_tasks.waiting import wait
from redis_tasks.workflows import chain, step
from tests import otel_spans, tasks
from tests.helpers import burst, child_env, manage

TRACED = Keys("traced")


@pytest.fixture
def spans() -> Any:
    exporter = otel_spans.install()
    exporter.clear()
    return exporter


def named(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in found if s["name"] == name]


def test_a_trace_crosses_a_real_worker_process_including_a_retry(
    spans: Any, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("a web request") as request:
        result = tasks.flaky.using(backend="traced").enqueue(1)  # fails once, then succeeds
    assert clean_redis.hget(TRACED.task(result.id), "trace")  # stored with the task
    [send] = named(otel_spans.finished(), "send default")
    assert send["kind"] == "PRODUCER" and send["parent_id"] == request.get_span_context().span_id
    assert send["attributes"]["messaging.message.id"] == result.id
    assert send["attributes"]["messaging.destination.name"] == "default"

    worker_spans = tmp_path / "spans.jsonl"
    worker = manage("redis_tasks_worker", "--backend", "traced",
                    env=child_env(REDIS_TASKS_TEST_SPANS=str(worker_spans)))  # fmt: skip
    try:
        result = wait(result, timeout=30)  # both attempts: the retry is due 10 ms later
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2

    runs = named(otel_spans.from_file(worker_spans), "process default")
    assert [r["attributes"]["redis_tasks.attempt"] for r in runs] == [1, 2]
    for run in runs:  # each attempt: a child of the send span, in the request's trace
        assert run["pid"] == worker.pid and run["kind"] == "CONSUMER"
        assert run["trace_id"] == send["trace_id"] == request.get_span_context().trace_id
        assert run["parent_id"] == send["span_id"] and run["links"] == [send["span_id"]]
        assert run["attributes"]["messaging.message.id"] == result.id
        assert run["attributes"]["redis_tasks.task.path"] == "tests.tasks.flaky"
    failed, succeeded = runs
    assert failed["status"] == "ERROR" and failed["events"] == ["exception"]
    assert failed["attributes"]["redis_tasks.status"] == "FAILED"
    assert succeeded["status"] == "UNSET" and succeeded["events"] == []
    assert succeeded["attributes"]["redis_tasks.status"] == "SUCCESSFUL"


def test_tracing_off_stores_nothing_and_records_no_span(
    spans: Any, clean_redis: redis.Redis
) -> None:
    with trace.get_tracer("tests").start_as_current_span("a web request"):
        result = tasks.add.enqueue(1, 2)  # the default backend: tracing off
    assert clean_redis.hget(Keys("task_queue").task(result.id), "trace") is None
    burst()
    assert [s["name"] for s in otel_spans.finished()] == ["a web request"]


def test_an_enqueue_outside_any_span_starts_a_trace(spans: Any, clean_redis: redis.Redis) -> None:
    result = tasks.add.using(backend="traced").enqueue(1, 2)
    burst("traced")
    [send] = named(otel_spans.finished(), "send default")
    [run] = named(otel_spans.finished(), "process default")
    assert send["parent_id"] is None and run["parent_id"] == send["span_id"]
    assert run["attributes"]["messaging.message.id"] == result.id


def test_every_step_of_a_workflow_is_a_child_of_its_one_send(spans: Any) -> None:
    traced_step = tasks.wf_double.using(backend="traced")
    handle = chain(step(traced_step, 2), step(traced_step), step(traced_step)).enqueue()
    burst("traced")
    assert [r.return_value for r in handle.results()] == [4, 8, 16]
    found = otel_spans.finished()
    [send] = named(found, "send default")
    assert send["attributes"]["messaging.batch.message_count"] == 3
    runs = named(found, "process default")
    assert sorted(r["attributes"]["messaging.message.id"] for r in runs) == sorted(
        handle.task_ids
    )  # the later steps, queued by the finish script, carry the workflow's context too
    assert all(r["parent_id"] == send["span_id"] for r in runs)


def test_a_periodic_tick_starts_a_trace_of_its_own(
    spans: Any, settings: Any, clean_redis: redis.Redis
) -> None:
    schedule = {"task": "tests.tasks.add", "cron": "0 0 1 1 *", "args": [1, 2], "missed": "once"}
    ticking = RedisBackend("traced", {**settings.TASKS["traced"], "schedules": {"y": schedule}})
    clean_redis.hset(TRACED.schedule("y"), "last", 0)  # its tick is due
    with trace.get_tracer("tests").start_as_current_span("unrelated"):
        Ticker(ticking).run_once()
    [send] = named(otel_spans.finished(), "send default")
    assert send["parent_id"] is None and send["attributes"]["redis_tasks.schedule"] == "y"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(TaskFieldsFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_records_carry_the_task_they_came_from() -> None:
    handler = Records()
    logger = logging.getLogger("tests.tasks")
    logger.addHandler(handler)
    try:
        ran = [tasks.logs_a_line.enqueue("hi"), tasks.alogs_a_line.enqueue("ho")]
        burst()
        logger.warning("outside any task")
    finally:
        logger.removeHandler(handler)
    by_text = {r.getMessage(): r for r in handler.records}
    for message, result in (("sync says hi", ran[0]), ("async says ho", ran[1])):
        record: Any = by_text[message]
        assert record.task_id == result.id
        assert record.task_path == result.task.module_path
        assert record.task_attempt == 1 and record.task_backend == "default"
    outside: Any = by_text["outside any task"]
    assert outside.task_id is None and outside.task_path is None
