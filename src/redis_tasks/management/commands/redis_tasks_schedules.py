"""``manage.py redis_tasks_schedules``: every periodic task with its last and next run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from redis_tasks.backend import redis_backends
from redis_tasks.ticker import redis_now


class Command(BaseCommand):
    help = "List the periodic tasks of every RedisBackend with their last and next run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON for scripts.")

    def handle(self, *args: Any, **options: Any) -> None:
        rows: list[dict[str, Any]] = []
        for backend in redis_backends():
            schedules = backend.schedules()
            if not schedules:
                continue
            now = redis_now(backend)
            state = backend.store.schedule_state(list(schedules), "last_enqueued_at")
            for name, schedule in sorted(schedules.items()):
                last = state[name]
                rows.append({
                    "backend": backend.alias,
                    "name": name,
                    "task": schedule.task,
                    "schedule": schedule.describe(),
                    "missed": schedule.missed,
                    "last_run": None if last is None
                    else datetime.fromtimestamp(last / 1000, tz=UTC).isoformat(),
                    "next_run": schedule.next_tick(now).isoformat(),
                })  # fmt: skip
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No periodic tasks configured.")
            return
        zone = timezone.get_current_timezone()

        def local(value: str | None) -> str:
            if value is None:
                return "never"
            return datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")

        table: list[tuple[str, ...]] = [
            ("BACKEND", "NAME", "TASK", "SCHEDULE", "LAST RUN", "NEXT RUN")
        ]
        table += [(r["backend"], r["name"], r["task"], r["schedule"], local(r["last_run"]),
                   local(r["next_run"])) for r in rows]  # fmt: skip
        widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
        for row in table:
            self.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
