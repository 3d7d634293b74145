"""Prometheus metrics: Redis-side counters and depths, per-process durations, both exposures."""

from __future__ import annotations

import urllib.request
from typing import Any

import redis
from django.test import RequestFactory
from prometheus_client.parser import text_string_to_metric_families

from redis_tasks.metrics import metrics_view
from tests import tasks
from tests.helpers import burst, manage, wait_until
from tests.redis_server import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = metrics_view(RequestFactory().get("/metrics"))
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def event(found: Any, name: str) -> float:
    return found[("redis_tasks_events_total", (("backend", "default"), ("event", name)))]


def test_counters_depths_and_durations(clean_redis: redis.Redis) -> None:
    scrape()  # installs the duration observer in this process
    for i in range(3):
        tasks.add.enqueue(i, i)
    tasks.fail.enqueue()
    tasks.fails_then_waits.enqueue()  # fails once, is retried in about a minute
    tasks.add.using(queue_name="later").enqueue(1, 1)
    burst(queues=["default"])
    found = scrape()
    assert event(found, "enqueued") == 6
    assert event(found, "succeeded") == 3
    assert event(found, "failed") == 1
    assert event(found, "retried") == 1
    depth = (
        "redis_tasks_queue_tasks",
        (("backend", "default"), ("queue", "later"), ("state", "ready")),
    )
    assert found[depth] == 1
    failed = ("redis_tasks_tasks", (("backend", "default"), ("state", "failed")))
    assert found[failed] == 1
    labels = (("backend", "default"), ("status", "SUCCESSFUL"), ("task", "tests.tasks.add"))
    count = ("redis_tasks_task_duration_seconds_count", labels)
    assert found[count] == 3


def test_worker_serves_metrics_on_a_port() -> None:
    port = free_port()
    proc = manage("redis_tasks_worker", "--metrics-port", str(port))
    try:

        def fetch() -> str | None:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                return None

        text = wait_until(fetch)
        found = samples(text)
        assert found[("redis_tasks_workers", (("backend", "default"),))] >= 0
        assert "redis_tasks_events_total" in text
    finally:
        proc.terminate()
        proc.wait(30)
