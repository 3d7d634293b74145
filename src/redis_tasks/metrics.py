"""Prometheus metrics (``pip install 'django-redis-tasks[prometheus]'``).

Two sources, so that one scrape of any process tells the whole story:

* **From Redis, at scrape time** (the same for every process): tasks by queue and state, live
  workers, and event counters kept by the Lua scripts themselves — enqueued, started,
  succeeded, failed, retried, expired, lost (a worker died), handed back — cluster-wide totals.
* **From this process**: a histogram of task durations, observed by the worker.

Expose them with the Django view (``path("metrics", redis_tasks.metrics.metrics_view)``) or with
``redis_tasks_worker --metrics-port 9100``. The framework's signals remain for anything custom.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "redis_tasks.metrics needs prometheus_client: pip install 'django-redis-tasks[prometheus]'"
    ) from exc

from .backend import redis_backends
from .compat import task_finished
from .ops import Inspector

EVENTS = (
    "enqueued", "started", "succeeded", "failed", "retried", "expired", "lost", "handed_back",
    "handed_off",
)  # fmt: skip

TASK_DURATION = Histogram(
    "redis_tasks_task_duration_seconds",
    "Time from an attempt's start to its outcome, observed by this worker process.",
    ["backend", "task", "status"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, float("inf")),
)


class RedisCollector(Collector):
    """Reads queue depth, workers and event counters from Redis at each scrape."""

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "redis_tasks_queue_tasks",
            "Tasks by queue and state.",
            labels=["backend", "queue", "state"],
        )
        totals = GaugeMetricFamily(
            "redis_tasks_tasks", "Tasks by state in a backend (finished ones while kept).",
            labels=["backend", "state"],
        )  # fmt: skip
        workers = GaugeMetricFamily("redis_tasks_workers", "Live workers.", labels=["backend"])
        paused = GaugeMetricFamily(
            "redis_tasks_queue_paused", "1 for a paused queue (no worker claims from it).",
            labels=["backend", "queue"],
        )  # fmt: skip
        events = CounterMetricFamily(
            "redis_tasks_events", "Task events counted in Redis, for all processes.",
            labels=["backend", "event"],
        )  # fmt: skip
        for backend in redis_backends():
            inspector = Inspector(backend)
            view = inspector.overview()
            for queue, counts in view["queues"].items():
                for state, n in counts.items():
                    depth.add_metric([backend.alias, queue, state], n)
                depth.add_metric([backend.alias, queue, "held"], view["held"].get(queue, 0))
                paused.add_metric([backend.alias, queue], 1 if queue in view["paused"] else 0)
            for state, n in view["totals"].items():
                totals.add_metric([backend.alias, state], n)
            workers.add_metric([backend.alias], len(view["workers"]))
            raw = inspector.client.hgetall(backend.store.keys.stats)
            counted = {k.decode(): int(v) for k, v in raw.items()}  # type: ignore[union-attr]
            for event in EVENTS:
                events.add_metric([backend.alias, event], counted.get(event, 0))
        yield from (depth, totals, workers, paused, events)


_collector: RedisCollector | None = None


def install(registry: CollectorRegistry = REGISTRY) -> None:
    """Register the Redis collector and the duration observer once per process."""
    global _collector
    if _collector is None:
        _collector = RedisCollector()
        registry.register(_collector)
        task_finished.connect(_observe_duration, dispatch_uid="redis_tasks.metrics")


def _observe_duration(sender: Any, task_result: Any, **kwargs: Any) -> None:
    from .backend import RedisBackend

    if not issubclass(sender, RedisBackend):
        return
    began, ended = task_result.last_attempted_at, task_result.finished_at
    if began is not None and ended is not None:
        labels = (task_result.backend, task_result.task.module_path, str(task_result.status))
        TASK_DURATION.labels(*labels).observe((ended - began).total_seconds())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format. Protect the URL as you would any internal page."""
    install()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the metrics over HTTP from a thread of this process (used by --metrics-port)."""
    from prometheus_client import start_http_server

    install()
    start_http_server(port, addr)
