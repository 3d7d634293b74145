"""The measures ``compare.py`` takes of one system, in a process configured for that system.

Every figure comes from runs on an emptied store, through the public task API, with the
system's own worker command in subprocesses. Drain rates use the tasks' own stored
``started_at``/``finished_at``: rate = tasks / (last finished_at - first started_at), so worker
start-up (importing Django, connecting) is left out for every system alike. Latencies are taken
on the client: from just before ``enqueue()`` until ``get_result()``, polled every 0.2 ms, first
shows the task finished.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.systems import RedisTasks, System

POLL = 0.0002  # seconds between get_result() polls while timing a latency
GAP = 0.002  # seconds between idle latency samples, so the worker is waiting again
WAIT_POLL = 0.01  # seconds between checks that a drain is over


@dataclass
class Sizes:
    runs: int = 3
    enqueue: int = 3000  # task.enqueue() calls per enqueue run
    bulk: int = 10_000  # tasks per bulk run (where the system has bulk enqueue)
    drain: int = 4000  # tasks per drain run, this backend and threadmill
    peer_drain: int = 600  # tasks per drain run, the peers that run one task at a time
    sleepers: int = 500  # 10 ms tasks
    samples: int = 200  # idle latency samples per run
    backlog: int = 10_000  # backlog under the priority-100 latency
    urgent: int = 50  # priority-100 samples per run
    depths: tuple[int, ...] = (1000, 100_000, 1_000_000)
    depth_window: int = 5000  # tasks drained past each depth
    queue_counts: tuple[int, ...] = (1, 10, 100)
    processes: tuple[int, ...] = (1, 2, 4)
    concurrency: int = 40  # our worker's --concurrency in the drains (the rest: its default)


@dataclass
class Results:
    """Per figure key, the value of each run; plus notes for the report."""

    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)


def say(text: str) -> None:
    print(text, end="", flush=True, file=sys.stderr)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


class Measures:
    def __init__(self, system: System, sizes: Sizes) -> None:
        from benchmarks import compare_tasks

        self.system = system
        self.sizes = sizes
        self.tasks = compare_tasks
        self.results = Results()
        self.ours = isinstance(system, RedisTasks)

    # --- helpers --------------------------------------------------------------------------

    def get(self, result_id: str) -> Any:
        return self.system.result(self.tasks.noop, result_id)

    def wait(self, result_id: str, timeout: float = 30.0, poll: float = POLL) -> Any:
        deadline = time.perf_counter() + timeout
        while True:
            result = self.get(result_id)
            if result.is_finished:
                if result.status != "SUCCESSFUL":
                    raise RuntimeError(f"task {result_id} ended {result.status}: {result.errors}")
                return result
            if time.perf_counter() > deadline:
                raise RuntimeError(f"task {result_id} not finished within {timeout:.0f} s")
            time.sleep(poll)

    def window(self, ids: list[str], timeout: float) -> float:
        """Wait until every task in ``ids`` finished; seconds from the first start to the
        last finish, from the tasks' stored times."""
        self.wait(ids[-1], timeout, WAIT_POLL)
        deadline = time.perf_counter() + timeout
        pending, starts, ends = list(ids), [], []
        while pending:
            left = []
            for result_id in pending:
                result = self.get(result_id)
                if result.is_finished:
                    starts.append(result.started_at)
                    ends.append(result.finished_at)
                else:
                    left.append(result_id)
            pending = left
            if pending and time.perf_counter() > deadline:
                raise RuntimeError(f"{len(pending)} of {len(ids)} tasks did not finish")
            if pending:
                time.sleep(0.05)
        return float((max(ends) - min(starts)).total_seconds())

    def latency(self, task: Any) -> float:
        """ms from just before enqueue() to get_result() first showing the task finished."""
        start = time.perf_counter()
        result_id = task.enqueue().id
        self.wait(result_id)
        return (time.perf_counter() - start) * 1000

    def warm(self) -> None:
        self.wait(self.tasks.noop.enqueue().id, timeout=60)

    # --- figures --------------------------------------------------------------------------

    def enqueue(self) -> None:
        s, r = self.sizes, self.results
        say("  enqueue loop / bulk:")
        for _ in range(s.runs):
            self.system.flush()
            start = time.perf_counter()
            for _ in range(s.enqueue):
                self.tasks.noop.enqueue()
            r.add("enqueue", s.enqueue / (time.perf_counter() - start))
            if self.system.bulk_how.endswith("(no bulk API)"):
                r.add("bulk", r.values["enqueue"][-1])
            else:
                self.system.flush()
                start = time.perf_counter()
                self.system.fill(self.tasks.noop, s.bulk)
                r.add("bulk", s.bulk / (time.perf_counter() - start))
            say(f" {r.values['enqueue'][-1]:,.0f} / {r.values['bulk'][-1]:,.0f}")
        say("\n")

    def drain_run(self, task: Any, count: int, processes: int) -> float:
        """Fill ``count`` tasks, then start the workers; tasks per second of the drain.
        Records memory per queued task and per kept result on the way. Our worker runs
        with ``sizes.concurrency``: for no-op tasks, the more tasks a claim and a finish
        carry, the faster the drain (benchmarks/README.md)."""
        self.system.flush()
        before = self.system.memory()
        ids = self.system.fill(task, count)
        queued = self.system.memory()
        options = {"concurrency": self.sizes.concurrency} if self.ours else {}
        with self.system.workers(processes, **options):
            seconds = self.window(ids, timeout=60 + count / 50)
        if task is self.tasks.noop and processes == 1:
            self.results.add("mem_queued", (queued - before) / count)
            self.results.add("mem_result", (self.system.memory() - before) / count)
        return count / seconds

    def drain(self) -> None:
        s = self.sizes
        count = s.drain if self.system.concurrent else s.peer_drain
        for key, task in (("drain_sync", self.tasks.noop), ("drain_async", self.tasks.anoop)):
            say(f"  {key} ({count:,} tasks):")
            for _ in range(s.runs):
                self.results.add(key, self.drain_run(task, count, 1))
                say(f" {self.results.values[key][-1]:,.0f}")
            say("\n")
        for processes in s.processes:
            key = f"drain_p{processes}"
            if processes == 1:
                self.results.values[key] = list(self.results.values["drain_sync"])
                continue
            say(f"  {key}:")
            for _ in range(s.runs):
                self.results.add(key, self.drain_run(self.tasks.noop, count, processes))
                say(f" {self.results.values[key][-1]:,.0f}")
            say("\n")
        self.results.values["drain_best"] = max(
            (self.results.values[f"drain_p{p}"] for p in s.processes), key=statistics.median
        )

    def sleepers(self) -> None:
        """Seconds for ``sizes.sleepers`` 10 ms tasks in one process, first start to last end."""
        s = self.sizes
        options = {"concurrency": 100} if self.system.concurrent else {}
        kinds: list[tuple[str, Any]] = [("sleep_sync", self.tasks.sleep10)]
        if self.system.concurrent:  # the others run one task at a time: ~10 s a run, async or not
            kinds.append(("sleep_async", self.tasks.asleep10))
        for key, task in kinds:
            say(f"  {key} ({s.sleepers} x 10 ms):")
            for _ in range(s.runs):
                self.system.flush()
                ids = self.system.fill(task, s.sleepers)
                with self.system.workers(1, **options):
                    self.results.add(key, self.window(ids, timeout=120))
                say(f" {self.results.values[key][-1]:.3f}")
            say("\n")

    def idle_latency(self) -> None:
        s = self.sizes
        say(f"  idle latency ({s.samples} samples):")
        with self.system.workers(1):
            self.warm()
            for _ in range(s.runs):
                samples = []
                for _ in range(s.samples):
                    samples.append(self.latency(self.tasks.noop))
                    time.sleep(GAP)
                self.results.add("idle_p50", percentile(samples, 50))
                self.results.add("idle_p99", percentile(samples, 99))
                say(f" {percentile(samples, 50):.2f}/{percentile(samples, 99):.2f}")
        say("\n")

    def urgent_latency(self) -> None:
        """Latency of priority-100 tasks while the worker drains a backlog of no-op tasks."""
        s = self.sizes
        if not self.system.priority_front:
            self.results.notes["urgent"] = "priority=100 refused by the backend"
            return
        urgent = self.tasks.noop.using(priority=100)
        say(f"  priority-100 latency, backlog {s.backlog:,}:")
        for _ in range(s.runs):
            self.system.flush()
            ids = self.system.fill(self.tasks.noop, s.backlog)
            with self.system.workers(1):
                self.wait(ids[0], timeout=60, poll=WAIT_POLL)  # draining by now
                samples = []
                for _ in range(s.urgent):
                    samples.append(self.latency(urgent))
                    time.sleep(GAP)
                if self.get(ids[-1]).is_finished:
                    raise RuntimeError("the backlog ran out before the samples were taken")
            self.results.add("urgent_p50", percentile(samples, 50))
            self.results.add("urgent_p99", percentile(samples, 99))
            say(f" {percentile(samples, 50):.2f}/{percentile(samples, 99):.2f}")
        say("\n")

    # --- scaling, this backend only ---------------------------------------------------------

    def drain_ready(
        self, queues: list[str], stop_at: int, urgent: Any
    ) -> tuple[float, list[float]]:
        """With the worker draining, take priority-100 latency samples until at most
        ``stop_at`` tasks are left in ``queues``; the drain rate over that time, and the
        samples."""
        assert isinstance(self.system, RedisTasks)
        ready = self.system.ready_count
        while ready(queues) > stop_at + self.sizes.depth_window * 0.9:
            time.sleep(0.001)  # the worker has started and warmed up
        start_count, start = ready(queues), time.perf_counter()
        samples = []
        while True:
            samples.append(self.latency(urgent))
            time.sleep(GAP)
            now_count = ready(queues)
            if now_count <= stop_at:
                break
        elapsed = time.perf_counter() - start
        return (start_count - now_count + len(samples)) / elapsed, samples

    def depth_scaling(self) -> None:
        """Enqueue rate, drain rate and priority-100 latency with ``depth`` tasks queued."""
        s = self.sizes
        queue = self.tasks.noop.queue_name
        urgent = self.tasks.noop.using(priority=100)
        for depth in s.depths:
            runs = 1 if depth >= 1_000_000 else s.runs
            say(f"  depth {depth:,} ({runs} runs):")
            for _ in range(runs):
                self.system.flush()
                self.system.fill(self.tasks.noop, depth + s.depth_window)
                start = time.perf_counter()
                for _ in range(1000):
                    self.tasks.noop.enqueue()
                self.results.add(f"depth{depth}_enqueue", 1000 / (time.perf_counter() - start))
                with self.system.workers(1):
                    rate, samples = self.drain_ready([queue], depth, urgent)
                self.results.add(f"depth{depth}_drain", rate)
                self.results.add(f"depth{depth}_p50", percentile(samples, 50))
                self.results.add(f"depth{depth}_p99", percentile(samples, 99))
                values = self.results.values
                say(
                    f" {values[f'depth{depth}_enqueue'][-1]:,.0f}/{rate:,.0f}/"
                    f"{values[f'depth{depth}_p50'][-1]:.2f}/{values[f'depth{depth}_p99'][-1]:.2f}"
                )
            say("\n")
        self.system.flush()

    def queue_scaling(self) -> None:
        """Drain rate and idle latency of a worker serving ``count`` queues."""
        assert isinstance(self.system, RedisTasks)
        s = self.sizes
        for count in s.queue_counts:
            queues = [f"q{i}" for i in range(count)]
            last = self.tasks.noop.using(queue_name=queues[-1])
            urgent = last.using(priority=100)
            say(f"  {count} queues:")
            for _ in range(s.runs):
                self.system.flush()
                per_queue = s.depth_window // count
                for name in queues:
                    self.system.fill(self.tasks.noop.using(queue_name=name), per_queue)
                with self.system.workers(1, queues=queues):
                    rate, _ = self.drain_ready(queues, per_queue * count // 10, urgent)
                    while self.system.ready_count(queues):
                        time.sleep(0.01)
                    time.sleep(0.1)
                    samples = []
                    for _ in range(s.samples // 2):
                        samples.append(self.latency(last))
                        time.sleep(GAP)
                # The same drain with the worker serving every queue (no --queue): the index
                # alone picks the queues, nothing is sent per queue.
                self.system.flush()
                for name in queues:
                    self.system.fill(self.tasks.noop.using(queue_name=name), per_queue)
                with self.system.workers(1):
                    every, _ = self.drain_ready(queues, per_queue * count // 10, urgent)
                self.results.add(f"queues{count}_drain", rate)
                self.results.add(f"queues{count}_drain_all", every)
                self.results.add(f"queues{count}_p50", percentile(samples, 50))
                self.results.add(f"queues{count}_p99", percentile(samples, 99))
                say(
                    f" {rate:,.0f}/{every:,.0f}/{percentile(samples, 50):.2f}/"
                    f"{percentile(samples, 99):.2f}"
                )
            say("\n")

    def leak(self, total: int) -> None:
        """Worker RSS (VmRSS of its process) after 10,000 tasks and after ``total``, fed in
        ``enqueue_many`` batches while it drains (at most ~20,000 queued at a time)."""
        assert isinstance(self.system, RedisTasks)
        queue = self.tasks.noop.queue_name
        keys = self.system.backend.store.keys
        marks = sorted({10_000, *(m for m in (100_000, 250_000, 500_000) if m < total), total})
        self.system.flush()
        say(f"  worker RSS over {total:,} tasks (MiB at {', '.join(f'{m:,}' for m in marks)}):")
        start, enqueued = time.perf_counter(), 0
        with self.system.workers(1) as pids:
            self.warm()
            while marks:
                waiting = self.system.ready_count([queue])
                if waiting < 10_000 and enqueued < total:
                    batch = min(10_000, total - enqueued)
                    self.system.fill(self.tasks.noop, batch)
                    enqueued += batch
                    continue
                done = enqueued - waiting - int(self.system.redis.zcard(keys.running))
                if done >= marks[0]:
                    rss = rss_kib(pids[0]) / 1024
                    self.results.add(f"rss_{marks.pop(0)}", rss)
                    say(f" {rss:.1f}")
                else:
                    time.sleep(0.05)
        self.results.add("leak_seconds", time.perf_counter() - start)
        values = self.results.values
        self.results.add("rss_growth", values[f"rss_{total}"][-1] / values["rss_10000"][-1])
        say(f" ({values['leak_seconds'][-1]:.0f} s)\n")

    def run(self, scaling: bool) -> Results:
        self.system.flush()
        with self.system.workers(1):
            self.warm()  # imports and first connections out of the way
        self.enqueue()
        self.drain()
        self.sleepers()
        self.idle_latency()
        self.urgent_latency()
        if scaling and self.ours:
            self.queue_scaling()
            self.depth_scaling()
        return self.results
