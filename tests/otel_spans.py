"""An OpenTelemetry SDK for the tracing tests: spans of this process kept in memory, and spans
of a worker process started by a test written to the file its environment names
(REDIS_TASKS_TEST_SPANS), one JSON object a line, so the test can read them back."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_memory = InMemorySpanExporter()
_installed = False
_lock = threading.Lock()


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            for span in spans:
                out.write(json.dumps(as_dict(span)) + "\n")
        return SpanExportResult.SUCCESS


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": context.trace_id,
        "span_id": context.span_id,
        "parent_id": span.parent.span_id if span.parent else None,
        "links": [link.context.span_id for link in span.links],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
    }


def install() -> InMemorySpanExporter:
    """The SDK, set up once per process (OpenTelemetry allows one global provider)."""
    global _installed
    with _lock:
        if not _installed:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(_memory))
            if "REDIS_TASKS_TEST_SPANS" in os.environ:
                exporter = FileExporter(os.environ["REDIS_TASKS_TEST_SPANS"])
                provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            _installed = True
    return _memory


def finished() -> list[dict[str, Any]]:
    """The spans this process has ended so far."""
    return [as_dict(span) for span in _memory.get_finished_spans()]


def from_file(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
