"""``manage.py redis_tasks_worker``: run a dedicated worker process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import sys
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from redis_tasks.backend import redis_backends
from redis_tasks.progress_line import ProgressLine, keep_logs_apart, show_progress
from redis_tasks.supervisor import EXIT_NOW, EXIT_RECYCLE, SUPERVISED, Supervisor
from redis_tasks.worker import DEFAULT_BURST_GIVE_UP, DEFAULT_GRACE, Worker

DUPLICATE_WINDOW = 2.0  # seconds: a second stop signal this soon is the same stop


def non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(value)
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _with_jitter(max_tasks: int | None, jitter: int | None) -> int | None:
    if max_tasks is None or not jitter:
        return max_tasks
    return max_tasks + random.randint(0, jitter)


class Command(BaseCommand):
    help = "Run a redis_tasks worker: claims and runs tasks of the RedisBackends in settings.TASKS."
    bar: ProgressLine | None = None

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            action="append",
            dest="backends",
            default=[],
            metavar="ALIAS",
            help="Serve this backend alias (repeatable). Default: every RedisBackend.",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            default=[],
            metavar="NAME",
            help="Serve this queue name (repeatable). Default: the backend's QUEUES, or every "
            "queue that holds tasks when QUEUES is not set.",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=None,
            help="Tasks in flight at once in this process (async on the loop, sync in threads). "
            "Default: the backend's 'concurrency' option (10).",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Run every task that is due, then exit 0. Deferred tasks not yet due stay queued.",
        )
        parser.add_argument(
            "--give-up-after",
            type=non_negative_float,
            default=DEFAULT_BURST_GIVE_UP,
            metavar="SECONDS",
            help="In --burst mode, exit with code 2 once Redis has been unreachable this long "
            f"(default {DEFAULT_BURST_GIVE_UP:g}). A worker without --burst keeps retrying.",
        )
        parser.add_argument(
            "--prefetch",
            type=non_negative_int,
            default=0,
            metavar="N",
            help="Claim up to N tasks more than --concurrency, to start them without a trip to "
            "Redis (for many short tasks on few slots; they are held by this worker while they "
            "wait). Default 0.",
        )
        parser.add_argument(
            "--max-tasks",
            type=positive_int,
            default=None,
            help="Exit after running this many tasks (under --processes, the supervisor then "
            "starts a fresh process in its place).",
        )
        parser.add_argument(
            "--max-tasks-jitter",
            type=non_negative_int,
            default=None,
            metavar="N",
            help="Add a random 0..N to --max-tasks, drawn by each process, so that processes "
            "started together are not all recycled at once.",
        )
        parser.add_argument(
            "--grace",
            type=non_negative_float,
            default=DEFAULT_GRACE,
            metavar="SECONDS",
            help="After SIGTERM/SIGINT, seconds running tasks may take to finish before they are "
            f"handed back to their queues (default {DEFAULT_GRACE:g}).",
        )
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=1,
            metavar="N",
            help="Run N worker processes (to use every core), supervised by this one.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            metavar="PORT",
            help="Serve Prometheus metrics on this port (needs the [prometheus] extra).",
        )
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Show a progress bar (default: in --burst mode when stderr is a terminal).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            backends = redis_backends(options["backends"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if not backends:
            raise CommandError("settings.TASKS has no RedisBackend to serve.")
        if options["max_tasks_jitter"] is not None and options["max_tasks"] is None:
            raise CommandError(
                "--max-tasks-jitter adds to --max-tasks: give --max-tasks too, e.g. "
                "--max-tasks 1000 --max-tasks-jitter 100."
            )
        for backend in backends:
            if backend.queues:
                unknown = set(options["queues"]) - backend.queues
                if unknown:
                    raise CommandError(
                        f"Queue(s) {', '.join(sorted(unknown))} not in QUEUES of backend "
                        f"{backend.alias!r} ({', '.join(sorted(backend.queues))})."
                    )
        self._configure_logging(options["verbosity"])
        if options["metrics_port"] is not None:
            from redis_tasks.metrics import serve

            serve(options["metrics_port"])  # with --processes, from the supervisor
        if options["processes"] > 1:
            run_child = functools.partial(self._serve, backends, options)
            code = Supervisor(run_child, options["processes"], options["burst"]).run()
            if code:
                sys.exit(code)
            return
        self._serve(backends, options)

    def _serve(self, backends: list[Any], options: dict[str, Any]) -> None:
        """One worker process: this one, or a child forked by --processes (supervisor.py)."""
        worker = Worker(
            backends,
            queues=options["queues"],
            concurrency=options["concurrency"] or max(b.config.concurrency for b in backends),
            burst=options["burst"],
            max_tasks=_with_jitter(options["max_tasks"], options["max_tasks_jitter"]),
            prefetch=options["prefetch"],
            grace=options["grace"],
            give_up_after=options["give_up_after"],
        )
        progress = options["progress"]
        if progress is None:
            progress = options["burst"] and sys.stderr.isatty()
        self.bar = ProgressLine(sys.stderr) if progress else None
        asyncio.run(self._run(worker, backends))
        if worker.recycled and os.environ.get(SUPERVISED) == "1" and not options["burst"]:
            worker.exit_code = EXIT_RECYCLE  # the supervisor starts a fresh process in its place
        if worker.abandoned_threads or worker.exit_code:
            # Threads of timed-out sync tasks cannot be joined: leave without waiting for them.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(worker.exit_code)

    async def _run(self, worker: Worker, backends: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        # A child of --processes: the supervisor's EXIT_NOW makes it exit at once.
        supervised = os.environ.get(SUPERVISED) == "1"

        first_signal_at: list[float] = []

        def on_signal(signum: int) -> None:
            # Under --processes the same stop may come twice at once (from systemd and from
            # the supervisor): a repeat within DUPLICATE_WINDOW is that, a later one means
            # "exit now" as for a single process.
            now = time.monotonic()
            earlier = bool(first_signal_at)
            repeat = earlier and now - first_signal_at[0] < DUPLICATE_WINDOW
            first_signal_at[:] = first_signal_at or [now]
            if supervised and signum != EXIT_NOW and repeat:
                return
            # Only a second signal exits at once: a worker stopping on its own (--max-tasks
            # reached, its burst done) when the first one comes still ends cleanly.
            if signum == EXIT_NOW or earlier:
                self.say(
                    f"Second stop signal ({signal.Signals(signum).name}): exiting now; leases "
                    "return the running tasks to their queues."
                )
                os._exit(1)
            self.say(
                f"{signal.Signals(signum).name}: no new tasks are claimed; running tasks get "
                f"{worker.grace:g}s, then go back to their queues (signal again to exit now)."
            )
            worker.request_stop()

        for signum in (signal.SIGINT, signal.SIGTERM, *([EXIT_NOW] if supervised else [])):
            loop.add_signal_handler(signum, on_signal, signum)
        if self.bar is None:
            await worker.run()
            return
        progress = asyncio.create_task(show_progress(worker, backends, self.bar))
        try:
            with keep_logs_apart(self.bar, ["redis_tasks", "django.tasks", "django_tasks"]):
                await worker.run()
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress

    def say(self, message: str) -> None:
        """A line to stderr, on a line of its own even while the progress bar is shown."""
        if self.bar is not None:
            self.bar.clear()
        self.stderr.write(message)

    def _configure_logging(self, verbosity: int) -> None:
        logger = logging.getLogger("redis_tasks")
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:  # a level set in settings.LOGGING wins
            logger.setLevel(
                logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING
            )
