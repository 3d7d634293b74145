"""``manage.py demo``: a throwaway Redis, a few hundred tasks, a burst worker, a report."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import django
import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from demoproject import tasks
from redis_tasks.testing import RedisServer
from redis_tasks.workflows import WorkflowHandle, chord, step

try:
    from django.tasks import TaskResultStatus, default_task_backend

    FRAMEWORK = "django.tasks"
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend

    FRAMEWORK = "django_tasks (backport)"

DEFER_BY = timedelta(seconds=1)
Results = dict[str, list[Any]]  # task name -> its TaskResults, in enqueue order


def start_windows(results: list[Any]) -> dict[int, tuple[float, float]]:
    """Priority -> (first, last) start of its tasks, in ms after the first task started."""
    first = min(r.started_at for r in results)
    windows: dict[int, tuple[float, float]] = {}
    for result in results:
        ms = (result.started_at - first).total_seconds() * 1000
        low, high = windows.get(result.task.priority, (ms, ms))
        windows[result.task.priority] = (min(low, ms), max(high, ms))
    return dict(sorted(windows.items(), reverse=True))


def clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-3]


class Command(BaseCommand):
    help = "Start a throwaway Redis, enqueue a few hundred tasks, run them with a burst worker."

    def handle(self, *args: Any, **options: Any) -> None:
        with RedisServer(settings.REDIS_PORT) as server:
            self.say("Redis:", f"throwaway {describe(server)} on 127.0.0.1:{server.port}")
            self.say("Framework:", f"{FRAMEWORK} on Django {django.get_version()}")
            results = self.enqueue()
            workflow = chord([step(tasks.checksum, n) for n in range(10)], step(tasks.combine))
            fan_in = workflow.enqueue()
            self.say("", "and a chord: 10 checksum, then combine(their 10 values) exactly once")
            self.run_worker(results["remind"][0])
            self.report(results)
            self.report_workflow(fan_in)

    def say(self, label: str, text: str) -> None:
        if label.startswith("\n"):
            self.stdout.write("")
        self.stdout.write(f"{label.strip():12} {text}")

    def enqueue(self) -> Results:
        """A mix of tasks, enqueued interleaved: the worker has to sort them by priority."""
        names = ("checksum", "fetch", "send_alert", "nudge", "cleanup", "explode", "remind")
        results: Results = {name: [] for name in names}
        run_after = timezone.now() + DEFER_BY
        results["remind"].append(tasks.remind.using(run_after=run_after).enqueue("stretch"))
        for n in range(200):
            results["checksum"].append(tasks.checksum.enqueue(n))
            if n < 150:
                results["fetch"].append(tasks.fetch.enqueue(n))
            if n % 5 == 0:
                results["send_alert"].append(tasks.send_alert.enqueue(f"disk {n} is full"))
                results["cleanup"].append(tasks.cleanup.enqueue(n))
            if n % 10 == 0:
                results["nudge"].append(tasks.nudge.enqueue(f"eric{n}"))
            if n % 40 == 0:
                results["explode"].append(tasks.explode.enqueue(f"bad input {n}"))
        total = sum(len(r) for r in results.values())
        self.say(
            "Enqueued:", f"{total} tasks: " + ", ".join(f"{len(r)} {n}" for n, r in results.items())
        )
        self.say("", "sync: checksum, cleanup, explode, remind; async: fetch, send_alert, nudge")
        self.say(
            "", f"remind runs after {DEFER_BY.total_seconds():g}s; nudge is on queue 'alternate'"
        )
        return results

    def run_worker(self, deferred: Any) -> None:
        self.say("\nWorker:", "manage.py redis_tasks_worker --burst --progress")
        self.stdout.flush()
        began = time.monotonic()
        call_command("redis_tasks_worker", burst=True, progress=True, verbosity=0)
        # A burst worker exits once nothing is due; a fast machine gets there before `remind`.
        if default_task_backend.get_result(deferred.id).status == TaskResultStatus.READY:
            wait = max((deferred.task.run_after - timezone.now()).total_seconds(), 0) + 0.01
            self.say("", f"remind is due in {wait:.1f}s: waiting for it, then one more burst")
            time.sleep(wait)
            call_command("redis_tasks_worker", burst=True, progress=False, verbosity=0)
        elapsed = time.monotonic() - began
        self.say("", f"done in {elapsed:.1f}s")

    def report(self, results: Results) -> None:
        final = {
            name: [default_task_backend.get_result(r.id) for r in rs]
            for name, rs in results.items()
        }
        statuses = Counter(str(r.status) for rs in final.values() for r in rs)
        self.say("\nStatus:", ", ".join(f"{n} {status}" for status, n in statuses.most_common()))

        self.say("Results:", "read back with default_task_backend.get_result(id)")
        for name in ("checksum", "fetch", "send_alert", "nudge", "cleanup"):
            result = final[name][1]
            call = f"{name}({', '.join(map(repr, result.args))})"
            self.say("", f"{call:28} -> {result.return_value!r}")
        failed = final["explode"][0]
        error = failed.errors[-1]
        call = f"explode({failed.args[0]!r})"
        self.say(
            "",
            f"{call:28} {failed.status}: {error.exception_class.__name__} "
            f"(traceback ends {error.traceback.strip().splitlines()[-1]!r})",
        )

        reminder = final["remind"][0]
        # started_at is when the worker claimed the task (Redis clock): highest priority first.
        undeferred = [r for rs in final.values() for r in rs if r is not reminder]
        windows = start_windows(undeferred)
        spans = ", ".join(f"{p} at {a:.0f}-{b:.0f}" for p, (a, b) in windows.items())
        self.say("Priorities:", f"started (ms after the first task): {spans}")

        run_after, started = reminder.task.run_after, reminder.started_at
        assert run_after is not None and started is not None
        late = (started - run_after).total_seconds() * 1000
        self.say(
            "Deferred:",
            f"remind run_after {clock(run_after)}, started {clock(started)} ({late:.0f} ms later)",
        )

    def report_workflow(self, handle: WorkflowHandle) -> None:
        *members, callback = handle.results()
        values = ", ".join(repr(m.return_value) for m in members[:2])
        self.say(
            "Workflow:",
            f"chord {handle.id[:8]}… {handle.state()}: combine([{values}, …]) "
            f"-> {callback.return_value!r}",
        )


def describe(server: RedisServer) -> str:
    """E.g. 'redis-server 7.0.15' or 'valkey-server 8.1.1'."""
    with redis.Redis(host="127.0.0.1", port=server.port) as client:
        info = client.info("server")
    version = info.get("valkey_version") or info["redis_version"]
    return f"{Path(server.binary).name} {version}"
