"""A soak: a realistic mix of tasks through several worker processes for a chosen time, while a
fault injector breaks things at random, then a check of every promise against an independent
ledger. CI runs it for under a minute (tests/test_soak.py); for hours:

    .venvs/py313-dj61/bin/python -m tests.soak --minutes 30                 # appendfsync everysec
    .venvs/py313-dj61/bin/python -m tests.soak --minutes 10 --fsync always

It needs redis-server and PostgreSQL (PGHOST, PGPORT, PGUSER, PGDATABASE; default
127.0.0.1:5432, postgres, test), where it writes its ledger to a table of its own, dropped at the
end. See docs/reliability.md ("The soak") for what it checks and recorded runs.

The mix: sync and async no-ops, sleeps, tasks that fail once and are retried, unique tasks,
bulk enqueues, deferred tasks, tasks that write to PostgreSQL in a transaction, tasks under a
keyed concurrency limit and under a rate limit, and a periodic task every second. The faults:
SIGKILL of a worker, SIGSTOP past its lease then SIGCONT, SIGTERM (graceful), Redis SIGKILLed
and restarted on its AOF, CLIENT KILL of every connection, CLIENT PAUSE and DEBUG SLEEP.
Workers that exit are restarted, as systemd would.

The checks: every accepted enqueue has exactly one final outcome (none lost, none stuck); every
execution beyond the first is explained by a fault that hit it (counted by cause); each
periodic tick was enqueued once; no more than two tasks of one concurrency group ran at once
(among those that ran once); Redis memory and worker RSS stayed bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = {"sync": 25, "async": 20, "sleep": 10, "flaky": 10, "unique": 5, "bulk": 10,
           "deferred": 10, "pg": 10, "limited": 3, "metered": 2}  # fmt: skip
GLOBAL_FAULTS = ("redis_restart", "client_kill", "client_pause", "debug_sleep")


@dataclass
class Fault:
    at: float
    kind: str
    pid: int | None = None  # the worker it hit (None: Redis, every worker)
    until: float = 0.0  # when its effect ended (a pause, a stop)


@dataclass
class Soak:
    seconds: float
    rate: float
    workers: int
    fsync: str
    fault_every: float
    concurrency: int = 10
    table: str = f"redis_tasks_soak_{os.getpid()}"
    accepted: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (kind, when)
    refused: int = 0
    retried_enqueues: int = 0
    faults: list[Fault] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    final: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # id -> status, lat
    ticks: dict[str, str] = field(default_factory=dict)  # tick task id -> tick (ms)
    redis_memory: list[int] = field(default_factory=list)
    worker_rss: list[int] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    # --- the system under test --------------------------------------------------------------

    def start(self) -> None:
        from redis_tasks.testing import RedisServer

        self.server = RedisServer(
            None, None, "--appendonly", "yes", "--appendfsync", self.fsync,
            "--enable-debug-command", "yes",
        ).start()  # fmt: skip
        os.environ["REDIS_TASKS_SOAK_URL"] = self.server.url
        os.environ["REDIS_TASKS_SOAK_TABLE"] = self.table
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.soak_settings"
        import django

        django.setup()
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {self.table} (key text, kind text, pid int, ppid int, "
                           "at double precision)")  # fmt: skip
        import redis

        self.redis = redis.Redis.from_url(self.server.url, socket_timeout=10)
        self.logs = Path(self.server.dir).parent / f"soak-{os.getpid()}-logs"
        self.logs.mkdir(exist_ok=True)
        for _ in range(self.workers):
            self.procs.append(self._worker())

    def _worker(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "django", "redis_tasks_worker",
             "--concurrency", str(self.concurrency), "--grace", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip

    def supervise(self) -> None:
        """Restart workers that exit, as systemd would."""
        while not self.done.is_set():
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    self.procs[i] = self._worker()
            time.sleep(0.2)

    # --- load -------------------------------------------------------------------------------

    def enqueue_loop(self, until: float) -> None:
        from django.utils import timezone

        from redis_tasks.exceptions import BackendUnavailable
        from tests import soak_tasks as t

        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        n = 0
        while time.monotonic() < until:
            started = time.monotonic()
            for _ in range(max(1, int(self.rate / 20))):
                n += 1
                kind = random.choices(kinds, weights)[0]
                key = f"{kind}-{n}"
                if kind == "sync":
                    send = lambda k=key: [t.sync_job.enqueue(k)]  # noqa: E731
                elif kind == "async":
                    send = lambda k=key: [t.async_job.enqueue(k, random.uniform(0, 0.05))]  # noqa: E731
                elif kind == "sleep":
                    send = lambda k=key: [t.sync_job.enqueue(k, random.uniform(0.05, 0.5))]  # noqa: E731
                elif kind == "flaky":
                    send = lambda k=key: [t.flaky_job.enqueue(k)]  # noqa: E731
                elif kind == "unique":
                    send = lambda: [t.unique_job.enqueue(f"unique-{random.randrange(20)}")]  # noqa: E731
                elif kind == "bulk":
                    send = lambda k=key: t.sync_job.get_backend().enqueue_many(  # noqa: E731
                        t.sync_job, [((f"{k}.{i}",), {}) for i in range(10)]
                    )
                elif kind == "deferred":
                    later = timezone.now() + timezone.timedelta(seconds=random.uniform(0.5, 3))
                    send = lambda k=key, when=later: [t.sync_job.using(run_after=when).enqueue(k)]  # noqa: E731
                elif kind == "limited":
                    group = random.randrange(3)
                    send = lambda k=f"{key}.g{group}", g=group: [t.limited_job.enqueue(k, group=g)]  # noqa: E731
                elif kind == "metered":
                    send = lambda k=key: [t.metered_job.enqueue(k)]  # noqa: E731
                else:
                    send = lambda k=key: [t.pg_job.enqueue(k)]  # noqa: E731
                results = self._send(send, BackendUnavailable)
                with self.lock:
                    for r in results or []:
                        self.accepted.setdefault(r.id, (kind, time.time()))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

    def _send(self, send: Any, unavailable: type[BaseException]) -> list[Any] | None:
        """Send; a maybe-applied enqueue is sent again (same ids) until Redis answers."""
        try:
            return list(send())
        except unavailable as exc:
            if not getattr(exc, "maybe_applied", False):
                self.refused += 1
                return None
            for _ in range(60):
                try:
                    self.retried_enqueues += 1
                    return list(exc.retry())  # type: ignore[attr-defined]
                except unavailable:
                    time.sleep(0.5)
            raise

    # --- faults -----------------------------------------------------------------------------

    def inject(self, until: float) -> None:
        kinds = ["kill", "stop", "term", "redis_restart", "client_kill", "client_pause",
                 "debug_sleep"]  # fmt: skip
        while time.monotonic() < until:
            time.sleep(random.uniform(0.5, 1.5) * self.fault_every)
            if time.monotonic() >= until:
                break
            kind = random.choice(kinds)
            try:
                self._fault(kind)
            except Exception as exc:  # a fault that could not be made is not a failure
                print(f"soak: fault {kind} not made: {exc!r}", file=sys.stderr)

    def _fault(self, kind: str) -> None:
        now = time.time()
        if kind in ("kill", "stop", "term"):
            live = [p for p in self.procs if p.poll() is None and p.pid not in self.stopped]
            if not live:
                return
            proc = random.choice(live)
            fault = Fault(now, kind, proc.pid)
            if kind == "kill":
                proc.kill()
            elif kind == "term":
                proc.terminate()
            else:  # past its lease (2 s), then back
                proc.send_signal(signal.SIGSTOP)
                self.stopped.add(proc.pid)
                pause = random.uniform(2.5, 4.0)
                fault.until = now + pause
                threading.Timer(pause, self._resume, [proc]).start()
            self.faults.append(fault)
        elif kind == "redis_restart":
            self.faults.append(Fault(now, kind))
            self.server.kill()
            time.sleep(random.uniform(0.2, 1.0))
            self.server.start(timeout=120)  # same port and directory: its AOF is replayed
            self.faults[-1].until = time.time()
        elif kind == "client_kill":
            self.faults.append(Fault(now, kind, until=now))
            self.redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        elif kind == "client_pause":
            self.faults.append(Fault(now, kind, until=now + 2))
            self.redis.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
        else:
            self.faults.append(Fault(now, kind, until=now + 2))
            self.redis.execute_command("DEBUG", "SLEEP", 2)

    def _resume(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.stopped.discard(proc.pid)

    # --- watching ---------------------------------------------------------------------------

    def sample(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(Exception):
                self.redis_memory.append(int(self.redis.info("memory")["used_memory"]))
            for proc in list(self.procs):
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
                    self.worker_rss.append(int(rss.split()[1]) * 1024)
                except (OSError, StopIteration):
                    pass
            self.done.wait(2)

    def check_results(self) -> int:
        """Read the outcome of accepted tasks not known final yet (before their result_ttl);
        return how many are still pending."""
        from redis_tasks.keys import Keys

        keys = Keys("default")
        with self.lock:
            pending = [i for i in self.accepted if i not in self.final]
        fields = ("status", "enqueued_at", "started_at", "run_after", "path", "tick")
        try:
            pipe = self.redis.pipeline(transaction=False)
            for task_id in pending:
                pipe.hmget(keys.task(task_id), *fields)
            replies = pipe.execute()
        except Exception:
            return len(pending)
        still = 0
        for task_id, (status, enqueued, started, run_after, _, _) in zip(
            pending, replies, strict=True
        ):
            if status in (b"SUCCESSFUL", b"FAILED"):
                due = max(int(enqueued), int(run_after) // 1000 if run_after else 0)
                latency = (int(started) - due) / 1000 if started else None
                self.final[task_id] = (status.decode(), latency)
            else:
                still += 1
        return still

    def check_ticks(self) -> None:
        """Note the tick of each periodic task the ledger shows (while its result lives)."""
        from django.db import connection

        from redis_tasks.keys import Keys

        with connection.cursor() as cursor:
            cursor.execute(f"SELECT DISTINCT key FROM {self.table} WHERE key LIKE 'tick:%%'")
            ids = [row[0].split(":", 1)[1] for row in cursor.fetchall()]
        keys = Keys("default")
        for task_id in ids:
            if task_id not in self.ticks:
                tick = self.redis.hget(keys.task(task_id), "tick")
                if tick is not None:
                    self.ticks[task_id] = tick.decode()

    def watch(self) -> None:
        while not self.done.wait(5):
            self.check_results()
            with contextlib.suppress(Exception):
                self.check_ticks()

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.start()
        began = time.monotonic()
        until = began + self.seconds
        threads = [threading.Thread(target=f, daemon=True) for f in (self.supervise, self.sample,
                                                                      self.watch)]  # fmt: skip
        injector = threading.Thread(target=self.inject, args=(until,), daemon=True)
        for thread in [*threads, injector]:
            thread.start()
        try:
            self.enqueue_loop(until)
            injector.join()
            for proc in self.procs:  # every worker running again, none paused
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
            drain_until = time.monotonic() + 120
            while self.check_results() and time.monotonic() < drain_until:
                time.sleep(1)
            self.check_ticks()
            return self.report(time.monotonic() - began)
        finally:
            self.done.set()
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
            for proc in self.procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.server.stop()

    # --- the report -------------------------------------------------------------------------

    def executions(self) -> dict[str, list[tuple[int, int, float]]]:
        from django.db import connection

        runs: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT key, pid, ppid, at FROM {self.table} WHERE kind = 'start' "
                           "ORDER BY at")  # fmt: skip
            for key, pid, ppid, at in cursor.fetchall():
                runs[key].append((pid, ppid, at))
        return runs

    def limited_overlap(self) -> int:
        """The most ``limited_job`` tasks of one group running at once (limit 2), from the
        ledger's start and end rows of those that ran once (a task run twice was hit by a fault
        that made its lease lapse: its slot was rightly given to another)."""
        from django.db import connection

        rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT key, kind, at FROM {self.table} WHERE key LIKE 'limited-%%'")
            for key, kind, at in cursor.fetchall():
                rows[key][kind].append(at)
        events: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for key, row in rows.items():
            if len(row["start"]) == 1 and len(row["end"]) == 1:
                group = key.rpartition(".")[2]
                events[group] += [(row["start"][0], 1), (row["end"][0], -1)]
        most = 0
        for timeline in events.values():
            running = 0
            for _, change in sorted(timeline):
                running += change
                most = max(most, running)
        return most

    def explain(self, first: tuple[int, int, float], second: tuple[int, int, float]) -> str | None:
        """The fault that made the first execution's outcome unstorable before the second: one
        whose effect overlapped them, on Redis (every worker) or on either's worker."""
        processes = {first[0], first[1], second[0], second[1]}
        for fault in self.faults:
            if fault.at > second[2] or max(fault.until, fault.at) < first[2] - 1:
                continue
            if fault.kind in GLOBAL_FAULTS or fault.pid in processes:
                return fault.kind
        return None

    def report(self, elapsed: float) -> dict[str, Any]:
        from redis_tasks.keys import Keys

        statuses = Counter(status for status, _ in self.final.values())
        lost, stuck = [], []
        keys = Keys("default")
        for task_id in self.accepted:
            if task_id not in self.final:
                (stuck if self.redis.exists(keys.task(task_id)) else lost).append(task_id)
        duplicates: Counter[str] = Counter()
        unexplained: list[dict[str, Any]] = []
        for key, runs in self.executions().items():
            expected = 2 if key.startswith("flaky-") else 1  # its first attempt fails on purpose
            for i in range(expected, len(runs)):
                cause = self.explain(runs[i - 1], runs[i])
                if cause is None:
                    unexplained.append({
                        "key": key,
                        "runs": [(pid, ppid, round(at, 3)) for pid, ppid, at in runs],
                        "faults_near": [(f.kind, f.pid, round(f.at, 3), round(f.until, 3))
                                        for f in self.faults
                                        if runs[i - 1][2] - 10 <= f.at <= runs[i][2] + 1],
                    })  # fmt: skip
                else:
                    duplicates[cause] += 1
        per_tick = Counter(self.ticks.values())
        latencies = [lat for _, lat in self.final.values() if lat is not None]
        windows = [(f.at, max(f.until, f.at) + 5) for f in self.faults]
        during = [lat for task_id, (_, lat) in self.final.items() if lat is not None
                  and any(a <= self.accepted[task_id][1] <= b for a, b in windows)]  # fmt: skip

        def pct(values: list[float], q: float) -> float | None:
            return (
                round(statistics.quantiles(values, n=100)[q - 1] * 1000, 1)
                if len(values) > 1
                else None
            )

        rss = self.worker_rss
        return {
            "seconds": round(elapsed),
            "fsync": self.fsync,
            "workers": self.workers,
            "accepted": len(self.accepted),
            "refused": self.refused,
            "enqueues_sent_again": self.retried_enqueues,
            "by_kind": dict(Counter(kind for kind, _ in self.accepted.values())),
            "outcomes": dict(statuses),
            "failed": sorted(i for i, (s, _) in self.final.items() if s == "FAILED")[:10],
            "lost": len(lost),
            "stuck": len(stuck),
            "faults": dict(Counter(f.kind for f in self.faults)),
            "duplicates_by_cause": dict(duplicates),
            "duplicates_unexplained": len(unexplained),
            "unexplained": unexplained[:10],
            "limited_max_overlap": self.limited_overlap(),
            "ticks_seen": len(self.ticks),
            "ticks_enqueued_twice": sum(1 for n in per_tick.values() if n > 1),
            "latency_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99)},
            "latency_during_faults_ms": {
                "p50": pct(during, 50),
                "p99": pct(during, 99),
                "tasks": len(during),
            },
            "redis_used_memory_mb": {
                "max": round(max(self.redis_memory, default=0) / 2**20, 1),
                "last": round((self.redis_memory or [0])[-1] / 2**20, 1),
            },
            "worker_rss_mb": {
                "first_max": round(max(rss[: len(rss) // 4 or 1], default=0) / 2**20, 1),
                "max": round(max(rss, default=0) / 2**20, 1),
            },
        }


def passed(report: dict[str, Any]) -> bool:
    return (
        report["lost"] == 0
        and report["stuck"] == 0
        and report["duplicates_unexplained"] == 0
        and report["ticks_enqueued_twice"] == 0
        and report["limited_max_overlap"] <= 2
        and report["outcomes"].get("FAILED", 0) == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=100, help="enqueue calls a second")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec")
    parser.add_argument("--fault-every", type=float, default=5, help="seconds, on average")
    parser.add_argument("--json", help="also write the report to this file")
    options = parser.parse_args()
    seconds = options.minutes * 60 if options.minutes is not None else options.seconds
    soak = Soak(seconds, options.rate, options.workers, options.fsync, options.fault_every)
    report = soak.run()
    text = json.dumps(report, indent=2)
    print(text)
    if options.json:
        Path(options.json).write_text(text)
    ok = passed(report)
    print("soak: PASSED" if ok else "soak: FAILED", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
