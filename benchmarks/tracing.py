"""What tracing (the ``tracing`` option) costs: client CPU per ``enqueue()`` and per task of
``enqueue_many()``, and a burst worker's drain rate, with tracing off, on with only the
OpenTelemetry API (no SDK: every span a no-op), and on with the SDK recording every span (a
BatchSpanProcessor handing them to an exporter that drops them, so export I/O is left out).

    .venvs/bench/bin/python benchmarks/tracing.py [--tasks 10000] [--runs 3]

(The bench venv needs opentelemetry-sdk: ``pip install opentelemetry-sdk``.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def install_sdk() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    from benchmarks.in_process import django_on_private_redis, enqueue_and_drain

    with django_on_private_redis():
        from benchmarks.bench_tasks import noop
        from django.conf import settings

        from redis_tasks.backend import RedisBackend

        # The global provider can be set once: the SDK comes last.
        for label, tracing in (("off", False), ("on, API only", True), ("on, SDK", True)):
            if label == "on, SDK":
                install_sdk()
            backend = RedisBackend("default", {**settings.TASKS["default"], "tracing": tracing})
            single, bulk, drain = enqueue_and_drain(backend, noop, options.tasks, options.runs)
            print(f"tracing {label:13}: enqueue() {single * 1e6:6.1f} us CPU, "
                  f"enqueue_many {bulk * 1e6:5.1f} us CPU a task, "
                  f"drain {drain:7.0f} tasks/s")  # fmt: skip


if __name__ == "__main__":
    main()
