"""Periodic tasks: cron expressions or fixed intervals, ticks enqueued exactly once.

Every worker (and the autostarted one) runs a small scheduler loop. For each schedule it works
out the latest tick that is due and asks Redis to enqueue it; the tick script compares and
records the tick in the same atomic step as the enqueue, so however many workers race for a
tick it is enqueued once, no leader is needed, and a crashed scheduler stops nothing while
another worker runs. Cron expressions are read in ``settings.TIME_ZONE`` by cronsim (DST
handled: a time that does not exist runs at the first valid moment after it; a repeated hour
runs once). Intervals tick at multiples of their length since the Unix epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.core import checks

MISSED_POLICIES = ("once", "skip")
MISFIRE_GRACE = 60.0  # seconds: a tick handled later than this was missed (downtime)
SCHEDULE_FIELDS = {"task", "cron", "every", "args", "kwargs", "priority", "queue_name", "missed"}


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str  # dotted path of a @task
    cron: str | None = None
    every: float | None = None  # seconds
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    queue_name: str | None = None
    missed: str = "once"  # after downtime: run the latest missed tick once, or skip it

    def describe(self) -> str:
        return f"cron {self.cron!r}" if self.cron else f"every {self.every:g}s"

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(settings.TIME_ZONE or "UTC")

    def latest_tick(self, now: datetime) -> datetime:
        """The latest tick at or before ``now``."""
        if self.every is not None:
            ticks = math.floor(now.timestamp() / self.every)
            return datetime.fromtimestamp(ticks * self.every, tz=UTC)
        assert self.cron is not None
        local = now.astimezone(self._zone()) + timedelta(microseconds=1)
        return next(CronSim(self.cron, local, reverse=True)).astimezone(UTC)

    def next_tick(self, now: datetime) -> datetime:
        """The first tick after ``now``."""
        if self.every is not None:
            ticks = math.floor(now.timestamp() / self.every) + 1
            return datetime.fromtimestamp(ticks * self.every, tz=UTC)
        assert self.cron is not None
        return next(CronSim(self.cron, now.astimezone(self._zone()))).astimezone(UTC)

    def grace(self) -> float:
        return min(MISFIRE_GRACE, self.every) if self.every is not None else MISFIRE_GRACE


def parse_schedule(
    name: str, spec: Any, where: str
) -> tuple[Schedule | None, list[checks.CheckMessage]]:
    """Validate one schedule of a backend's ``schedules`` option (no imports, no network)."""

    def error(problem: str, hint: str) -> tuple[None, list[checks.CheckMessage]]:
        return None, [checks.Error(f"{where} schedule {name!r} {problem}", hint=hint,
                                   id="redis_tasks.E006")]  # fmt: skip

    example = "e.g. {'task': 'app.tasks.report', 'cron': '0 7 * * mon-fri'}"
    if not isinstance(spec, dict):
        return error("must be a dict.", example)
    unknown = set(spec) - SCHEDULE_FIELDS
    if unknown:
        return error(f"has unknown keys {sorted(unknown)}.", f"Known: {sorted(SCHEDULE_FIELDS)}.")
    if not isinstance(spec.get("task"), str) or not spec["task"]:
        return error("needs 'task', the dotted path of a @task function.", example)
    if ("cron" in spec) == ("every" in spec):
        return error("needs exactly one of 'cron' and 'every'.", example)
    if "cron" in spec:
        try:
            CronSim(spec["cron"], datetime.now(UTC))
        except (CronSimError, TypeError) as exc:
            return error(f"has an invalid cron expression {spec['cron']!r}: {exc}.",
                         "Five fields: minute hour day-of-month month day-of-week.")  # fmt: skip
    every = spec.get("every")
    if "every" in spec and (type(every) not in (int, float) or every is None or every <= 0):
        return error(f"has 'every' {every!r}; it must be a positive number of seconds.", example)
    if not isinstance(spec.get("args", []), list | tuple):
        return error("has 'args' that is not a list.", "Write args as a list.")
    if not isinstance(spec.get("kwargs", {}), dict):
        return error("has 'kwargs' that is not a dict.", "Write kwargs as a dict.")
    if spec.get("missed", "once") not in MISSED_POLICIES:
        return error(f"has 'missed' {spec['missed']!r}.", "Use 'once' or 'skip'.")
    return Schedule(
        name=name,
        task=spec["task"],
        cron=spec.get("cron"),
        every=None if every is None else float(every),
        args=list(spec.get("args", [])),
        kwargs=dict(spec.get("kwargs", {})),
        priority=spec.get("priority"),
        queue_name=spec.get("queue_name"),
        missed=spec.get("missed", "once"),
    ), []


# Schedules declared in code, by backend alias: call periodic() in an AppConfig.ready() or a
# module that it imports, so that every process (workers included) registers them.
_registered: dict[str, dict[str, Schedule]] = {}


def periodic(
    task: Any,
    *,
    cron: str | None = None,
    every: float | None = None,
    name: str | None = None,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    queue_name: str | None = None,
    missed: str = "once",
) -> Schedule:
    """Run ``task`` on a schedule, declared in code: ``periodic(report, cron="0 7 * * *")``."""
    spec: dict[str, Any] = {"task": task.module_path, "args": list(args), "kwargs": kwargs or {},
                            "missed": missed}  # fmt: skip
    for key, value in (("cron", cron), ("every", every), ("priority", priority),
                       ("queue_name", queue_name)):  # fmt: skip
        if value is not None:
            spec[key] = value
    schedule, errors = parse_schedule(name or task.module_path, spec, "periodic()")
    if errors or schedule is None:
        raise ValueError(f"{errors[0].msg} {errors[0].hint}")
    _registered.setdefault(task.backend, {})[schedule.name] = schedule
    return schedule


def code_schedules(alias: str) -> dict[str, Schedule]:
    return dict(_registered.get(alias, {}))


def unregister(alias: str, name: str) -> None:
    """Forget a schedule declared with ``periodic()`` (for tests that declare their own)."""
    _registered.get(alias, {}).pop(name, None)


def resolve(schedule: Schedule, task_resolver: Callable[[str], Any]) -> Any:
    """The task of a schedule, with its call options applied."""
    task = task_resolver(schedule.task)
    changes: dict[str, Any] = {}
    if schedule.priority is not None:
        changes["priority"] = schedule.priority
    if schedule.queue_name is not None:
        changes["queue_name"] = schedule.queue_name
    return task.using(**changes) if changes else task
