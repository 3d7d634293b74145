"""OpenTelemetry spans from enqueue to run (the ``tracing`` option; the ``[otel]`` extra).

Only the official ``opentelemetry-api`` is used: the project configures the SDK (exporter,
sampler, propagator), this module only asks for a tracer. An enqueue records a PRODUCER span
``send <queue>`` (one per call of ``enqueue_many``, a workflow or a periodic tick) and stores
the W3C context of that span with each task, as the propagator writes it (``traceparent``, and
``tracestate`` when there is one: ~70 bytes). The worker runs each attempt inside a CONSUMER
span ``process <queue>`` that is a **child** of the stored context and also **links** to it.

Why a child and not only a link: the OpenTelemetry messaging conventions let a process span
take the creation context as its parent when it has no ambient context of its own, which a
worker never has; a child keeps the request and the task it caused in one trace, as Celery's
instrumentation does, and is what tracing UIs draw as one waterfall. The link is kept as the
conventions ask, so tools that follow links find the producer either way. Every attempt of a
retried task is a sibling under the same producer span (``redis_tasks.attempt`` tells them
apart); a workflow's later steps and its chord callback, queued by a script when the step
before them ends, carry the workflow's own send span; a periodic tick has no caller, so its
send span starts a trace of its own.

With tracing off (the default) nothing here is imported and no field is stored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import __version__

if TYPE_CHECKING:
    from .execution import Outcome

SYSTEM = "redis_tasks"  # messaging.system: not one of the conventions' well-known values
_tracer = trace.get_tracer("redis_tasks", __version__)


@contextlib.contextmanager
def sending(
    queue: str, task_ids: list[str], path: str | None = None, schedule: str | None = None
) -> Iterator[str | None]:
    """A producer span around an enqueue; yields the context to store with its tasks (JSON
    text), or None when there is no valid span to carry (no SDK configured, say). A periodic
    tick (``schedule``) starts a trace of its own."""
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
    }
    if len(task_ids) == 1:
        attributes["messaging.message.id"] = task_ids[0]
    else:
        attributes["messaging.batch.message_count"] = len(task_ids)
    if path is not None:
        attributes["redis_tasks.task.path"] = path
    if schedule is not None:
        attributes["redis_tasks.schedule"] = schedule
    root = Context() if schedule is not None else None
    with _tracer.start_as_current_span(
        f"send {queue}", context=root, kind=SpanKind.PRODUCER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield json.dumps(carrier, separators=(",", ":")) if carrier else None


def _consumer_span(result: Any, stored: bytes | str | None) -> Any:
    parent = None
    links = []
    if stored:
        try:
            parent = propagate.extract(json.loads(stored))
        except (ValueError, TypeError, AttributeError):  # not a carrier: a trace of its own
            parent = None
        if parent is not None:
            span_context = trace.get_current_span(parent).get_span_context()
            if span_context.is_valid:
                links.append(Link(span_context))
    queue = result.task.queue_name
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": result.id,
        "redis_tasks.task.path": result.task.module_path,
        "redis_tasks.attempt": int(result.attempts),
        "redis_tasks.backend": result.backend,
    }
    return _tracer.start_as_current_span(
        f"process {queue}", context=parent, kind=SpanKind.CONSUMER, links=links,
        attributes=attributes, record_exception=False, set_status_on_exception=False,
    )  # fmt: skip


def _ended(span: Any, outcome: Outcome) -> Outcome:
    span.set_attribute("redis_tasks.status", str(getattr(outcome.status, "value", outcome.status)))
    exc = outcome.exception
    if exc is not None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    return outcome


def traced(result: Any, stored: bytes | None, body: Callable[[], Outcome]) -> Outcome:
    """Run a sync body inside the task's consumer span (in the thread that runs the body, so
    the task's own spans are its children)."""
    with _consumer_span(result, stored) as span:
        return _ended(span, body())


async def atraced(
    result: Any, stored: bytes | None, body: Callable[[], Awaitable[Outcome]]
) -> Outcome:
    """The same around an async body, on the worker's event loop (the span is current only
    in the body's own task)."""
    with _consumer_span(result, stored) as span:
        return _ended(span, await body())
