"""Progress from inside a running task, readable from any process while it runs and after.

    from redis_tasks import progress

    @task(takes_context=True)
    def resize_all(context, image_ids: list[int]) -> None:
        for done, image_id in enumerate(image_ids, 1):
            resize(image_id)
            progress.report(context, done, total=len(image_ids), message=f"image {image_id}")

A report is a small JSON object in the task's hash (``progress``): ``done``, ``total``,
``message`` and ``at`` (when it was written). Reports are throttled: at most one every
``THROTTLE`` seconds per task is written (a loop may call ``report`` for every item), but the
last one (``done == total``) always is. ``redis_tasks show``, ``status`` and the dashboard's
task page show it; ``progress.of(result)`` reads it. Async tasks: ``await progress.areport(...)``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, cast

from .compat import task_backends
from .scripts import PROGRESS
from .sender import Call
from .serialization import dumps

if TYPE_CHECKING:
    from .backend import RedisBackend

THROTTLE = 0.5  # seconds between two reports of one task that are written
MESSAGE_MAX = 500  # characters of a message kept
_last: dict[str, float] = {}  # task id -> when its last report was written (this process)


def _due(task_id: str, done: float, total: float | None) -> bool:
    """Whether this report is written now (throttled, but never the last one)."""
    now = time.monotonic()
    final = total is not None and done >= total
    last = _last.get(task_id)
    if not final and last is not None and now - last < THROTTLE:
        return False
    if final:
        _last.pop(task_id, None)
    else:
        if len(_last) > 10_000:  # tasks that never reported their end: forget them all
            _last.clear()
        _last[task_id] = now
    return True


def _call(context: Any, done: float, total: float | None, message: str) -> tuple[Any, Call]:
    result = context.task_result
    backend = cast("RedisBackend", task_backends[result.backend])
    value = {"done": done, "total": total, "message": str(message)[:MESSAGE_MAX], "at": time.time()}
    return backend, Call(PROGRESS, [backend.store.keys.task(result.id)], [dumps(value)])


def report(context: Any, done: float, total: float | None = None, message: str = "") -> bool:
    """Record the task's progress (from its ``TaskContext``); False when throttled away."""
    if not _due(context.task_result.id, done, total):
        return False
    backend, call = _call(context, done, total, message)
    backend.store.connections.sender.run(call)
    return True


async def areport(context: Any, done: float, total: float | None = None, message: str = "") -> bool:
    if not _due(context.task_result.id, done, total):
        return False
    backend, call = _call(context, done, total, message)
    await backend.store.connections.asender.run(call)
    return True


def of(result: Any) -> dict[str, Any] | None:
    """The last progress reported by ``result``'s task, or None."""
    store = cast("RedisBackend", task_backends[result.backend]).store
    raw = store.connections.sync.hget(store.keys.task(result.id), "progress")
    return None if raw is None else parse(raw)


def parse(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(value: dict[str, Any] | None) -> str:
    """'3/10 (30%) image 7' for the command line."""
    if not value:
        return ""
    done, total = value.get("done"), value.get("total")
    text = f"{done:g}" if isinstance(done, int | float) else str(done)
    if isinstance(total, int | float) and total:
        text += f"/{total:g} ({100 * float(done or 0) / total:.0f}%)"
    return f"{text} {value.get('message') or ''}".strip()
