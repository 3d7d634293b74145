"""``manage.py redis_tasks``: see and manage queues, tasks and workers from the command line.

    redis_tasks status                      counts by state per backend and queue; live workers
    redis_tasks list failed [--queue Q] [--task PATH] [--page N] [--per-page N]
    redis_tasks show ID                     one task whole: args, attempts, every traceback
    redis_tasks workflow ID                 a chain, group or chord: each of its tasks
    redis_tasks retry ID [ID ...]           a failed or dead-lettered task runs again
    redis_tasks cancel ID [ID ...]          a waiting task never runs (FAILED, TaskCancelled)
    redis_tasks purge --older-than 7d       delete finished results older than an age
    redis_tasks drain QUEUE                 cancel every waiting task of a queue
    redis_tasks pause QUEUE / resume QUEUE  no worker claims from a queue / they do again

``--json`` prints machine-readable output; destructive actions ask first unless ``--yes``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from redis_tasks.backend import RedisBackend, redis_backends
from redis_tasks.connection import redacted
from redis_tasks.ops import STATES, Inspector, OperationRefused
from redis_tasks.progress import describe
from redis_tasks.progress_line import ProgressLine, render

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def age(value: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw]?)", value.strip())
    if not match:
        raise ValueError(value)
    return float(match[1]) * UNITS[match[2] or "s"]


class Command(BaseCommand):
    help = "See and manage redis_tasks queues, tasks and workers."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.common_arguments: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def add_base_argument(self, parser: CommandParser, *args: str, **kwargs: Any) -> None:
        """Django's own options (``-v``, ``--settings``...), noted so that every action accepts
        them after its name too, as Django's commands accept options anywhere."""
        if args != ("--version",):
            self.common_arguments.append((args, kwargs))
        super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        own: list[tuple[tuple[str, ...], dict[str, Any]]] = [
            (("--backend",), {"action": "append", "default": [], "metavar": "ALIAS",
                              "help": "Only this backend (repeatable). Default: every "
                                      "RedisBackend."}),
            (("--json",), {"action": "store_true", "help": "Print JSON for scripts."}),
        ]  # fmt: skip
        if self.requires_system_checks:
            self.common_arguments.append(
                (("--skip-checks",), {"action": "store_true", "help": "Skip system checks."})
            )
        for names, kwargs in own:
            parser.add_argument(*names, **kwargs)
        common = [*own, *self.common_arguments]
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def action(name: str, what: str) -> CommandParser:
            """An action's parser; it takes the command's options too (given after the
            action, they override those given before it)."""
            action_parser: CommandParser = sub.add_parser(name, help=what)
            for names, kwargs in common:
                hidden = {**kwargs, "default": argparse.SUPPRESS}
                if names[0] not in ("--backend", "--json"):
                    hidden["help"] = argparse.SUPPRESS  # listed by `redis_tasks --help`
                action_parser.add_argument(*names, **hidden)
            return action_parser

        action("status", "Counts by state per queue, and the live workers.")
        lister = action("list", "List tasks in a state.")
        lister.add_argument("state", choices=STATES)
        lister.add_argument("--queue")
        lister.add_argument("--task", metavar="PATH", help="Only tasks of this dotted path.")
        lister.add_argument("--page", type=int, default=1)
        lister.add_argument("--per-page", type=int, default=50)
        show = action("show", "Show one task whole.")
        show.add_argument("id")
        action("workflow", "Show a chain, group or chord: each task's status.").add_argument("id")
        for name, what in (
            ("retry", "Run failed or dead-lettered tasks again."),
            ("cancel", "Cancel tasks, waiting or running."),
        ):
            each = action(name, what)
            each.add_argument("ids", nargs="+", metavar="ID")
            each.add_argument("--yes", action="store_true", help="Do not ask.")
        purge = action("purge", "Delete finished results older than an age.")
        purge.add_argument(
            "--older-than", type=age, required=True, metavar="AGE", help="e.g. 3600, 30m, 12h, 7d"
        )
        purge.add_argument("--yes", action="store_true", help="Do not ask.")
        for name, what in (
            ("pause", "No worker claims from these queues (they keep taking enqueues)."),
            ("resume", "Workers claim from these queues again."),
        ):
            action(name, what).add_argument("queues", nargs="+", metavar="QUEUE")
        drain = action("drain", "Cancel every waiting task of a queue.")
        drain.add_argument("queue")
        drain.add_argument("--yes", action="store_true", help="Do not ask.")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            backends = redis_backends(options["backend"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if not backends:
            raise CommandError("settings.TASKS has no RedisBackend.")
        self.as_json = options["json"]
        try:
            getattr(self, f"do_{options['action']}")(backends, options)
        except redis.RedisError as exc:
            locations = sorted({redacted(b.config.location) for b in backends})
            raise CommandError(
                f"Redis failed: {str(exc).rstrip('.')}. Nothing more was done; check that Redis "
                f"is running and LOCATION is right ({', '.join(locations)})."
            ) from exc

    # --- output -------------------------------------------------------------------------------

    def emit(self, data: Any, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str) if self.as_json else text)

    def confirm(self, question: str, options: dict[str, Any]) -> None:
        if options.get("yes"):
            return
        if not sys.stdin.isatty():
            raise CommandError(f"{question} Refusing without a terminal to ask; pass --yes.")
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
            raise CommandError("Nothing done.")

    def table(self, rows: list[tuple[Any, ...]]) -> str:
        if len(rows) == 1:
            return "(none)"
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)  # fmt: skip

    def one_backend(
        self, backends: list[RedisBackend], task_id: str
    ) -> tuple[Inspector, dict[str, Any]]:
        for backend in backends:
            inspector = Inspector(backend)
            try:
                return inspector, inspector.task(task_id)
            except OperationRefused:
                continue
        raise CommandError(f"No task {task_id!r} in {', '.join(b.alias for b in backends)}.")

    # --- actions ------------------------------------------------------------------------------

    def do_status(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        views = [Inspector(b).overview() for b in backends]
        lines = []
        for view in views:
            t = view["totals"]
            lines.append(f"Backend {view['backend']!r} (Redis namespace {view['namespace']!r})")
            rows: list[tuple[Any, ...]] = [("QUEUE", "READY", "DEFERRED", "HELD BACK", "STATE")]
            rows += [(q, c["ready"], c["deferred"], view["held"].get(q, 0),
                      "paused" if q in view["paused"] else "")
                     for q, c in sorted(view["queues"].items())]  # fmt: skip
            lines.append(self.table(rows))
            lines.append(f"running {t['running']}, failed {t['failed']}, successful kept "
                         f"{t['successful']}, dead-lettered {t['dead']}")  # fmt: skip
            workers: list[tuple[Any, ...]] = [("WORKER", "QUEUES", "CONCURRENCY", "IN FLIGHT",
                                               "DONE", "FAILED", "STARTED")]  # fmt: skip
            workers += [(w["id"], ",".join(w["queues"]) or "all", w["concurrency"],
                         " ".join(w["in_flight"]) or "-", w["done"], w["failed"], w["started_at"])
                        for w in view["workers"]]  # fmt: skip
            lines.append(self.table(workers))
            if view["progress"]:
                running: list[tuple[Any, ...]] = [("RUNNING TASK", "PROGRESS")]
                running += [(i, describe(p)) for i, p in view["progress"].items()]
                lines.append(self.table(running))
            lines.append("")
        self.emit(views, "\n".join(lines).rstrip())

    def do_list(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        per_page, page = max(1, options["per_page"]), max(1, options["page"])
        found = []
        for backend in backends:
            rows = Inspector(backend).list_tasks(
                options["state"], options["queue"], (page - 1) * per_page, per_page, options["task"]
            )
            found += [{"backend": backend.alias, **r.as_dict()} for r in rows]
        table: list[tuple[Any, ...]] = [("BACKEND", "ID", "TASK", "QUEUE", "PRIORITY", "STATUS",
                                         "ATTEMPTS", "ERRORS", "ENQUEUED", "FINISHED")]  # fmt: skip
        table += [(r["backend"], r["id"], r["task"], r["queue"], r["priority"], r["status"],
                   r["attempts"], r["errors"], r["enqueued_at"] or "-", r["finished_at"] or "-")
                  for r in found]  # fmt: skip
        self.emit(found, f"{self.table(table)}\n(page {page}, {per_page} per page)")

    def do_show(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        _, detail = self.one_backend(backends, options["id"])
        if not detail["valid"]:
            text = f"Task {detail['id']}: cannot be read: {detail['problem']}\n" + "\n".join(
                f"  {k}: {v}" for k, v in detail["raw"].items()
            )
            return self.emit(detail, text)
        head = [f"{k}: {detail[k]}" for k in ("id", "task", "queue", "priority", "status", "args",
                "kwargs", "enqueued_at", "run_after", "started_at", "last_attempted_at",
                "finished_at", "attempts", "worker_ids")]  # fmt: skip
        if detail["progress"]:
            head.append(f"progress: {describe(detail['progress'])}")
        if detail["workflow"]:
            head.append(
                f"workflow: {detail['workflow']} (redis_tasks workflow {detail['workflow']})"
            )
        if detail["status"] == "SUCCESSFUL":
            head.append(f"return_value: {json.dumps(detail['return_value'])}")
        for number, error in enumerate(detail["errors"], 1):
            head.append(f"--- error {number}: {error['exception']}\n{error['traceback'].rstrip()}")
        self.emit(detail, "\n".join(head))

    def _each(self, backends: list[RedisBackend], options: dict[str, Any], verb: str) -> None:
        ids = options["ids"]
        self.confirm(f"{verb.capitalize()} {len(ids)} task(s)?", options)
        outcome = {}
        for task_id in ids:
            inspector, _ = self.one_backend(backends, task_id)
            try:
                getattr(inspector, verb)(task_id)
                outcome[task_id] = "ok"
            except OperationRefused as exc:
                outcome[task_id] = str(exc)
        self.emit(outcome, "\n".join(f"{i}: {o}" for i, o in outcome.items()))
        if any(o != "ok" for o in outcome.values()):
            done = {"retry": "retried", "cancel": "cancelled"}[verb]
            raise CommandError(f"Some tasks could not be {done}.")

    def do_retry(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        self._each(backends, options, "retry")

    def do_cancel(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        self._each(backends, options, "cancel")

    def do_purge(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        seconds = options["older_than"]
        self.confirm(f"Delete results that finished more than {seconds:g}s ago?", options)
        removed = {b.alias: Inspector(b).purge(seconds) for b in backends}
        self.emit(removed, "\n".join(f"{a}: {n} result(s) deleted" for a, n in removed.items()))

    def do_drain(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        queue = options["queue"]
        self.confirm(f"Cancel every waiting task of queue {queue!r}?", options)
        drained = {}
        bar = ProgressLine(sys.stderr) if sys.stderr.isatty() else None  # a terminal only
        for backend in backends:
            inspector = Inspector(backend)
            total = sum(inspector.overview()["queues"].get(queue, {}).values())
            started, done = time.monotonic(), 0
            for done in inspector.drain(queue):
                if bar is not None:
                    elapsed = time.monotonic() - started
                    bar.draw(f"{backend.alias}: {render(done, max(total - done, 0), elapsed)}")
            if bar is not None:
                bar.clear()
            drained[backend.alias] = done
        self.emit(drained, "\n".join(f"{a}: {n} task(s) cancelled" for a, n in drained.items()))

    def do_pause(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        self._pausing(backends, options["queues"], "pause")

    def do_resume(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        self._pausing(backends, options["queues"], "resume")

    def _pausing(self, backends: list[RedisBackend], queues: list[str], verb: str) -> None:
        for backend in backends:
            inspector = Inspector(backend)
            for queue in queues:
                getattr(inspector, verb)(queue)
        done = {b.alias: Inspector(b).paused() for b in backends}
        self.emit({"paused": done}, "\n".join(
            f"{alias}: paused queues: {', '.join(p) or 'none'}" for alias, p in done.items()
        ))  # fmt: skip

    def do_workflow(self, backends: list[RedisBackend], options: dict[str, Any]) -> None:
        from redis_tasks.compat import TaskResultDoesNotExist
        from redis_tasks.workflows import WorkflowHandle

        for backend in backends:
            try:
                handle = WorkflowHandle.get(options["id"], backend.alias)
            except TaskResultDoesNotExist:
                continue
            rows: list[tuple[Any, ...]] = [("#", "TASK", "PATH", "STATUS")]
            listed: list[dict[str, str]] = []
            data = {"id": handle.id, "kind": handle.kind, "backend": backend.alias,
                    "state": handle.state(), "tasks": listed}  # fmt: skip
            for at, (task_id, result) in enumerate(zip(handle.all_ids, handle.results(),
                                                       strict=True)):  # fmt: skip
                number = "callback" if task_id == handle.callback_id else str(at)
                status = str(result.status) if result else "not queued yet"
                path = result.task.module_path if result else "-"
                rows.append((number, task_id, path, status))
                listed.append({"id": task_id, "status": status, "path": path})
            head = f"{handle.kind.capitalize()} {handle.id} ({backend.alias}): {data['state']}"
            return self.emit(data, f"{head}\n{self.table(rows)}")
        raise CommandError(
            f"No workflow {options['id']!r} in {', '.join(b.alias for b in backends)}."
        )
