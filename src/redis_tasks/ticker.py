"""The worker's side of periodic tasks: one pass over a backend's schedules (``schedules.py``)
enqueues each tick that is due, once across all workers (the tick script decides)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .compat import task_enqueued
from .schedules import Schedule, resolve
from .serialization import resolve_task

if TYPE_CHECKING:
    from .backend import RedisBackend

logger = logging.getLogger("redis_tasks")
IDLE = 60.0  # seconds to the next pass when a backend has no schedule
IDLE_WAIT = 1.0


def redis_now(backend: RedisBackend) -> datetime:
    seconds, micros = backend.store.connections.sync.time()
    return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)


def decide(schedule: Schedule, tick: datetime, last_ms: int | None, now: datetime) -> bool | None:
    """Enqueue this tick (True), record it as skipped (False), or leave it (None, done)."""
    tick_ms = int(tick.timestamp() * 1000)
    if last_ms is not None and last_ms >= tick_ms:
        return None
    if last_ms is None:
        return False  # a new schedule starts with the next tick, not at once
    late = (now - tick).total_seconds() > schedule.grace()
    return not (late and schedule.missed == "skip")


def seconds_to_next_tick(schedule: Schedule, now: datetime) -> float:
    """How long to sleep before the schedule's next tick. In a repeated DST hour a cron's next
    tick can lie behind us; then a pass a second later, rather than a spin."""
    until_next = (schedule.next_tick(now) - now).total_seconds()
    return until_next if until_next > 0 else IDLE_WAIT


class Ticker:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.schedules = backend.schedules()
        self._reported: set[str] = set()

    def run_once(self) -> float:
        """Handle every due tick; return seconds until the next tick of any schedule."""
        if not self.schedules:
            return IDLE
        store = self.backend.store
        now = redis_now(self.backend)
        state = store.schedule_state(list(self.schedules))
        wait = IDLE
        for name, schedule in self.schedules.items():
            wait = min(wait, seconds_to_next_tick(schedule, now))
            tick = schedule.latest_tick(now)
            action = decide(schedule, tick, state[name], now)
            if action is None:
                continue
            try:
                task = resolve(schedule, resolve_task)
                [result], [request] = self.backend.prepare_many(
                    task, [(schedule.args, schedule.kwargs)]
                )
            except Exception as exc:
                if name not in self._reported:
                    logger.error("Schedule %r cannot enqueue %s: %s", name, schedule.task, exc)
                    self._reported.add(name)
                continue
            outcome = self._tick(name, int(tick.timestamp() * 1000), action, request)
            if outcome == "enqueued":
                logger.info("Schedule %r: tick %s enqueued as task %s", name, tick.isoformat(),
                            result.id)  # fmt: skip
                task_enqueued.send(type(self.backend), task_result=result)
            elif outcome == "skipped" and state[name] is not None:
                logger.warning("Schedule %r: missed tick %s skipped", name, tick.isoformat())
            elif outcome == "full":
                logger.warning("Schedule %r: backend full; tick %s retried", name, tick.isoformat())
        return max(wait, 0.001)

    def _tick(self, name: str, tick_ms: int, action: bool, request: Any) -> str:
        if not (action and self.backend.config.tracing):
            return self.backend.store.tick(name, tick_ms, action, request)
        from . import tracing

        with tracing.sending(request.queue, [request.task_id], request.path, schedule=name) as c:
            request = request if c is None else request._replace(trace=c)
            return self.backend.store.tick(name, tick_ms, action, request)
