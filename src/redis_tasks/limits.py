"""Flow control across every worker of a backend instance: rate limits and concurrency limits,
per task (``@task(rate_limit="100/m", concurrency_limit=3, limit_key="customer_id")``) and per
queue (the backend's ``queue_limits``). See docs/flow-control.md.

Here the limits are parsed, validated and named; they are enforced inside the claim script
(``lua/lib/limits.lua``), which holds a task back while one of its limits is reached, so no
client-side sleep or count is ever trusted. A limit applies to a *group*: ``t:<task path>``
(or ``t:<task path>:<value of limit_key>``) for a task's own limits, ``q:<queue>`` for a
queue's. A task carries its groups in its hash (``limits``, written at enqueue); a queue's
limits come with each claim from the worker's settings.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

from django.core import checks

UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*")
GROUP_FORBIDDEN = set("|;\n\r")
KNOWN_QUEUE_LIMITS = {"rate_limit", "concurrency_limit"}


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any ``period_ms`` (a sliding window)."""

    count: int
    period_ms: int

    def encoded(self) -> str:
        return f"{self.count}|{self.period_ms}"


def parse_rate(value: Any) -> Rate:
    """'100/m', '10/s', '5/h', '1000/d', '3/10s' -> Rate; ValueError with the fix otherwise."""
    match = RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) < 1 or match[2] == "0":
        raise ValueError(
            f"rate limit {value!r} is not '<count>/<unit>' with a unit of s, m, h or d "
            "(e.g. '100/m', '10/s', '3/10s')"
        )
    return Rate(int(match[1]), int(match[2] or 1) * UNITS[match[3]])


def check_concurrency(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"concurrency limit {value!r} is not a positive integer")
    return value


@dataclass(frozen=True)
class QueueLimits:
    rate: Rate | None = None
    concurrency: int | None = None


def parse_queue_limits(where: str, value: Any) -> tuple[dict[str, QueueLimits], list[Any]]:
    """The backend's ``queue_limits``: queue name -> {"rate_limit": ..., "concurrency_limit":
    ...}. Returns the parsed limits and check errors (redis_tasks.E009)."""
    errors: list[Any] = []
    parsed: dict[str, QueueLimits] = {}
    if not isinstance(value, dict):
        return {}, [_error(where, f"'queue_limits' is {value!r}; it must be a dict")]
    for queue, spec in value.items():
        if not isinstance(queue, str) or not queue or set(queue) & set("{} \n\r\t"):
            errors.append(_error(where, f"'queue_limits' names the queue {queue!r}"))
            continue
        if not isinstance(spec, dict) or not spec or set(spec) - KNOWN_QUEUE_LIMITS:
            errors.append(_error(where, f"'queue_limits'[{queue!r}] is {spec!r}"))
            continue
        try:
            rate = parse_rate(spec["rate_limit"]) if "rate_limit" in spec else None
            most = spec.get("concurrency_limit")
            concurrency = None if most is None else check_concurrency(most)
        except ValueError as exc:
            errors.append(_error(where, f"'queue_limits'[{queue!r}]: {exc}"))
            continue
        parsed[queue] = QueueLimits(rate, concurrency)
    return parsed, errors


def _error(where: str, problem: str) -> Any:
    return checks.Error(
        f"{where} {problem}.",
        hint="Write it as {'emails': {'rate_limit': '10/s', 'concurrency_limit': 3}}: a rate "
        "of '<count>/<unit>' (s, m, h, d) and/or a positive number of tasks at once.",
        id="redis_tasks.E009",
    )


def queue_limits_argument(limits: dict[str, QueueLimits]) -> str:
    """The queues' limits as the claim script takes them: JSON, '' for none."""
    if not limits:
        return ""
    return json.dumps({
        queue: {"r": q.rate.encoded() if q.rate else "", "c": q.concurrency or ""}
        for queue, q in limits.items()
    })  # fmt: skip


def limit_value(task: Any, args: Any, kwargs: Any) -> str:
    """The value of the task's ``limit_key`` argument in one call (its group's last part).
    Raises ValueError, naming the argument, when the call does not pass it."""
    name = task.limit_key
    try:
        bound = inspect.signature(task.func).bind_partial(
            *([None] if task.takes_context else []), *args, **kwargs
        )
        bound.apply_defaults()
        value = bound.arguments[name]
    except (TypeError, KeyError) as exc:
        raise ValueError(
            f"task {task.module_path!r} is limited per value of its argument {name!r} "
            "(limit_key), which this call does not pass"
        ) from exc
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if set(text) & GROUP_FORBIDDEN:
        raise ValueError(f"the value of {name!r} ({text!r}) cannot name a limit group")
    return text


def task_limits(task: Any, args: Any, kwargs: Any) -> str | None:
    """What a call's hash records of its own limits: 'r|<group>|<count>|<period_ms>' and/or
    'c|<group>|<max>', joined by ';'; None without limits."""
    rate, concurrency = getattr(task, "rate_limit", None), getattr(task, "concurrency_limit", None)
    if rate is None and concurrency is None:
        return None
    group = f"t:{task.module_path}"
    if getattr(task, "limit_key", None):
        group += ":" + limit_value(task, args, kwargs)
    parts = []
    if rate is not None:
        parts.append(f"r|{group}|{parse_rate(rate).encoded()}")
    if concurrency is not None:
        parts.append(f"c|{group}|{concurrency}")
    return ";".join(parts)
