"""The systems ``compare.py`` measures: this backend and its peers, each with its store and worker.

Every system is driven through the public task API (``task.enqueue()``, ``get_result()``), and
its worker is its own documented management command, run as subprocesses. What differs per
system is here: how its store starts and is emptied, the command line of its worker for a given
number of processes, how to queue many tasks fastest, and how much memory its store uses.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from redis_tasks.backend import RedisBackend

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "benchmarks.compare_settings"
SUM_OF_ZCARDS = (
    "local n = 0 for _, key in ipairs(KEYS) do n = n + redis.call('ZCARD', key) end return n"
)
STOP_TIMEOUT = 15.0  # seconds a worker gets to exit after SIGTERM before SIGKILL


class Unfinished:
    """The result shown for a task whose system stores none until the task has run."""

    is_finished = False
    status = "READY"


class System:
    """One system under test. Subclasses fill in what differs."""

    key = ""  # REDIS_TASKS_BENCH_SYSTEM, read by compare_settings
    label = ""
    package = ""
    bulk_how = "task.enqueue() loop (no bulk API)"
    priority_front = True  # can a task be enqueued with priority=100 (to the queue's front)?
    memory_unit = "bytes of Redis used_memory"
    # Runs many tasks at once in one process (threads or an event loop): it gets the drain size
    # of ours and a concurrency option for the 10 ms sleepers; the others run one at a time.
    concurrent = False
    forks = False  # its worker command forks the worker processes itself, even for one

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.server: Any = None
        self.tmp = tempfile.mkdtemp(prefix="redis-tasks-bench-")

    # --- store ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the private store and export its location for the settings."""
        from redis_tasks.testing import RedisServer

        self.server = RedisServer().start()
        self.env = {
            "REDIS_TASKS_BENCH_SYSTEM": self.key,
            "REDIS_TASKS_BENCH_URL": self.server.url,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
        }
        os.environ.update(self.env)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def setup(self) -> None:
        """After django.setup(): whatever the store needs before the first task."""
        import redis

        self.redis = redis.Redis.from_url(f"{self.server.url}/0")

    def flush(self) -> None:
        self.redis.flushall()

    def result(self, task: Any, result_id: str) -> Any:
        """The task's result as ``get_result()`` shows it."""
        return task.get_backend().get_result(result_id)

    def memory(self) -> int:
        return int(self.redis.info("memory")["used_memory"])

    # --- queueing -------------------------------------------------------------------------

    def fill(self, task: Any, count: int) -> list[str]:
        """Queue ``count`` calls of ``task`` the fastest way the system offers; their ids."""
        return [task.enqueue().id for _ in range(count)]

    # --- workers --------------------------------------------------------------------------

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        """The management commands (after ``python -m django``) that make ``processes``
        worker processes; one command per process unless the worker has its own pool."""
        raise NotImplementedError

    def settings_text(self) -> str:
        """How the worker is run, for the report."""
        raise NotImplementedError

    @contextmanager
    def workers(self, processes: int = 1, **options: Any) -> Iterator[list[int]]:
        """Run the worker processes; yields their pids. Stopped (SIGTERM, then SIGKILL of the
        process group each was started in) on the way out. Their output goes to one temp file,
        shown if something fails."""
        procs: list[subprocess.Popen[bytes]] = []
        with tempfile.TemporaryFile() as log:
            try:
                for command in self.worker_commands(processes, options):
                    procs.append(self.spawn(command, log))
                yield [p.pid for p in procs]
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a {self.label} worker exited early ({p.returncode})")
            except BaseException:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-3000:])
                raise
            finally:
                self.stop_workers(procs, processes)

    def spawn(self, command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start one worker command (after ``python -m django``) in a new process group, on
        this interpreter, with the settings of this system; its output goes to ``log``."""
        env = {
            **os.environ,
            **self.env,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "django", *command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def stop_workers(self, procs: list[subprocess.Popen[bytes]], processes: int) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
            if p.poll() is None or processes > 1 or self.forks:  # a pool's children too
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def version(self) -> str:
        return version(self.package)


class RedisTasks(System):
    key = "redis_tasks"
    label = "django-redis-tasks"
    package = "django-redis-tasks"
    bulk_how = "backend.enqueue_many(), 1,000 a call"
    concurrent = True

    def setup(self) -> None:
        super().setup()
        from django.tasks import task_backends

        self.backend = cast("RedisBackend", task_backends["default"])

    def fill(self, task: Any, count: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, count, 1000):
            calls: list[tuple[Any, Any]] = [((), {})] * min(1000, count - start)
            ids.extend(r.id for r in self.backend.enqueue_many(task, calls))
        return ids

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        command = ["redis_tasks_worker", "-v", "0"]
        if processes > 1:
            command += ["--processes", str(processes)]
        if options.get("concurrency"):
            command += ["--concurrency", str(options["concurrency"])]
        if options.get("prefetch"):
            command += ["--prefetch", str(options["prefetch"])]
        if options.get("burst"):
            command.append("--burst")
        for queue in options.get("queues", ()):
            command += ["--queue", queue]
        return [command]

    def settings_text(self) -> str:
        return (
            "`redis_tasks_worker` (default `--concurrency 10`: sync tasks in a 10-thread pool, "
            "async on the event loop); N processes: `--processes N`"
        )

    def ready_count(self, queues: Sequence[str]) -> int:
        """Tasks waiting in the ready sets of ``queues`` (read straight from Redis), summed by
        the server: a client pipeline of one ZCARD per queue, polled while the worker drains,
        would take CPU from the worker it measures in proportion to the number of queues."""
        keys = self.backend.store.keys
        total = self.redis.eval(SUM_OF_ZCARDS, len(queues), *(keys.ready(q) for q in queues))
        return int(cast(int, total))


class TasksRedis(System):
    key = "tasks_redis"
    label = "django-tasks-redis"
    package = "django-tasks-redis"

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        return [["run_redis_tasks", "--continuous", "-v", "0"] for _ in range(processes)]

    def settings_text(self) -> str:
        return (
            "`run_redis_tasks --continuous` (one task at a time per process, as documented); "
            "N processes: N such commands"
        )


class TasksRQ(System):
    key = "tasks_rq"
    label = "django-tasks-rq"
    package = "django-tasks-rq"
    priority_front = False  # RQBackend leaves supports_priority False: priority=100 is refused

    worker_class = "rq.worker.SimpleWorker"  # no fork per job; see README (tuning)

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        common = ["--job-class", "django_tasks_rq.Job", "--worker-class", self.worker_class]
        if processes == 1:
            return [["rqworker", *common, "-v", "0", "default"]]
        return [["rqworker-pool", "--num-workers", str(processes), *common, "-v", "0", "default"]]

    def settings_text(self) -> str:
        return (
            f"`rqworker --job-class django_tasks_rq.Job --worker-class {self.worker_class}`; "
            f"N processes: `rqworker-pool --num-workers N` (same classes); django-rq "
            "connection through `USE_REDIS_CACHE` (django-redis), see settings"
        )


class TasksDB(System):
    key = "tasks_db"
    label = "django-tasks-db (SQLite)"
    package = "django-tasks-db"
    bulk_how = "task.enqueue() loop inside one transaction.atomic()"
    memory_unit = "bytes of SQLite file"
    interval = "0.01"  # db_worker --interval: seconds between polls of an empty queue

    def start(self) -> None:
        self.path = str(Path(self.tmp) / "tasks.sqlite3")
        self.env = {
            "REDIS_TASKS_BENCH_SYSTEM": self.key,
            "REDIS_TASKS_BENCH_SQLITE": self.path,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
        }
        os.environ.update(self.env)

    def stop(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # the SQLite file and its -wal, -shm

    def setup(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def flush(self) -> None:
        from django.db import connection
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM")

    def memory(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute("PRAGMA freelist_count")
            free = cursor.fetchone()[0]
            cursor.execute("PRAGMA page_size")
            size = cursor.fetchone()[0]
        return int((pages - free) * size)

    def fill(self, task: Any, count: int) -> list[str]:
        from django.db import transaction

        with transaction.atomic():
            return [str(task.enqueue().id) for _ in range(count)]

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        command = [
            "db_worker",
            "--interval",
            self.interval,
            "--no-startup-delay",
            "--no-reload",
            "-v",
            "0",
        ]
        if options.get("queues"):
            command += ["--queue-name", ",".join(options["queues"])]
        return [command for _ in range(processes)]

    def settings_text(self) -> str:
        return (
            f"`db_worker --interval {self.interval} --no-startup-delay` (one task at a time per "
            "process); N processes: N such commands; SQLite in WAL mode"
        )


class Threadmill(System):
    """threadmill's own worker: ``threadmill worker`` forks ``--workers`` processes from a
    supervisor, each with ``--threads`` threads fed by a prefetch buffer (``--prefetch-count``,
    4 x threads by default) that one thread fills in batches. It needs Python 3.14, so
    ``compare.py`` runs its child in ``.venvs/bench314``."""

    key = "threadmill"
    label = "threadmill"
    package = "threadmill"
    concurrent = True
    forks = True
    # The tuned set (benchmarks/README.md, tuning notes): the thread count and the idle poll.
    # By default an idle worker polls after 10 ms, doubling up to 1 s between polls.
    threads = 4
    poll_interval = "0.001"
    poll_max_interval = "0.002"

    def result(self, task: Any, result_id: str) -> Any:
        """threadmill writes a result when the task ends; before that ``get_result()`` raises."""
        from django.tasks.exceptions import TaskResultDoesNotExist

        try:
            return super().result(task, result_id)
        except TaskResultDoesNotExist:
            return Unfinished()

    def worker_commands(self, processes: int, options: dict[str, Any]) -> list[list[str]]:
        threads = options.get("concurrency") or self.threads
        command = ["threadmill", "worker", "--workers", str(processes), "--threads", str(threads)]
        if options.get("prefetch"):
            command += ["--prefetch-count", str(options["prefetch"])]
        if options.get("tuned", True):
            command += ["--poll-interval", self.poll_interval]
            command += ["--poll-max-interval", self.poll_max_interval]
        command += ["--log-format", "%(levelname)s %(name)s %(message)s"]
        if options.get("burst"):
            command.append("--exit-empty")
        if options.get("queues"):
            command += ["--queues", *options["queues"]]
        return [command]

    def settings_text(self) -> str:
        return (
            f"`threadmill worker --workers 1 --threads {self.threads} --poll-interval "
            f"{self.poll_interval} --poll-max-interval {self.poll_max_interval}` (prefetch: its "
            f"default, 4 x threads); N processes: `--workers N`; the 10 ms sleepers: "
            "`--threads 100`; on Python 3.14 (it requires it)"
        )


SYSTEMS: dict[str, type[System]] = {
    s.key: s for s in (RedisTasks, TasksRedis, TasksRQ, TasksDB, Threadmill)
}
