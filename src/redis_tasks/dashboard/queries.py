"""What the dashboard reads from Redis, on top of ``redis_tasks.ops.Inspector``.

Every function here costs a bounded number of Redis commands whatever the number of tasks:
counts are ZCARD/ZCOUNT (O(1) / O(log n)), lists are windows of a sorted set by rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from django.utils.timesince import timesince

from ..backend import RedisBackend
from ..connection import redacted
from ..ops import Inspector, TaskSummary
from ..sender import SyncClient
from ..series import LastHour, last_hour
from .charts import Chart

# States in the order the dashboard shows them, with their labels.
STATE_LABELS = {
    "ready": "Ready",
    "deferred": "Deferred",
    "running": "Running",
    "failed": "Failed",
    "successful": "Successful (kept)",
    "dead": "Dead-lettered",
}
WAITING = ("ready", "deferred")
PER_PAGE_CHOICES = (25, 50, 100, 200)
# With a filter the Inspector cannot apply through an index (task path; queue of a finished
# task) a page examines at most this many positions, and "next" continues after them.
SCAN_WINDOW = 1000
# Waiting tasks of several queues are merged by score, which reads every queue from its head:
# deeper than this, the list asks for one queue (paged by rank, at any depth).
MAX_MERGED_OFFSET = 2000
# A drain from the dashboard stops after this many seconds (the rest: drain again, or the CLI).
DRAIN_BUDGET_SECONDS = 10.0


def _now_ms(client: SyncClient) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- overview --------------------------------------------------------------------------------


@dataclass
class Throughput:
    """Finished tasks (whose results are kept) by finish time, from the done:* indexes."""

    successful_1m: int = 0
    failed_1m: int = 0
    successful_10m: int = 0
    failed_10m: int = 0

    @property
    def finished_1m(self) -> int:
        return self.successful_1m + self.failed_1m

    @property
    def per_minute_10m(self) -> float:
        return (self.successful_10m + self.failed_10m) / 10


@dataclass
class BackendOverview:
    alias: str
    namespace: str = ""
    location: str = ""
    error: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # ready, deferred and held back by a limit: what maxsize counts
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    throughput: Throughput = field(default_factory=Throughput)
    hour: LastHour | None = None  # per minute: started, succeeded, failed; depth samples
    # Filled in by the view: (state, label, count, list URL), the charts and action URLs.
    cards: list[tuple[str, str, int, str]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    drain_url: str = ""
    purge_url: str = ""
    pause_url: str = ""


def throughput(inspector: Inspector, now: int) -> Throughput:
    """Tasks finished in the last minute and the last ten before ``now`` (ms, Redis clock):
    ZCOUNT over the done indexes, scored by finish time. Results not kept (purged, expired) are
    not counted."""
    client, keys = inspector.client, inspector.keys
    pipe = client.pipeline(transaction=False)
    for window in (60_000, 600_000):
        pipe.zcount(keys.done("SUCCESSFUL"), now - window, "+inf")
        pipe.zcount(keys.done("FAILED"), now - window, "+inf")
    s1, f1, s10, f10 = (int(n) for n in pipe.execute())
    return Throughput(successful_1m=s1, failed_1m=f1, successful_10m=s10, failed_10m=f10)


def backend_overview(backend: RedisBackend) -> BackendOverview:
    found = BackendOverview(alias=backend.alias, location=redacted(backend.store.connections.url))
    inspector = Inspector(backend)
    found.namespace = inspector.keys.namespace
    try:
        data = inspector.overview()
        now = _now_ms(inspector.client)
        found.throughput = throughput(inspector, now)
        found.hour = last_hour(inspector.client, inspector.keys, now)
    except redis.RedisError as exc:
        found.error = f"{type(exc).__name__}: {exc}"
        return found
    found.totals = data["totals"]
    found.waiting = found.totals["ready"] + found.totals["deferred"] + sum(data["held"].values())
    found.queues = [
        {"name": name, **counts, "held": data["held"].get(name, 0),
         "paused": name in data["paused"]}
        for name, counts in data["queues"].items()
    ]  # fmt: skip
    for worker in data["workers"]:
        worker["started"] = started = _datetime(worker.get("started_at"))
        worker["uptime"] = ""
        if started is not None:
            recent = (datetime.now(UTC) - started).total_seconds() < 60
            worker["uptime"] = "under a minute ago" if recent else f"{timesince(started)} ago"
        found.workers.append(worker)
    return found


# --- task lists ------------------------------------------------------------------------------


@dataclass
class Row:
    summary: TaskSummary
    enqueued_at: datetime | None
    run_after: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, summary: TaskSummary) -> Row:
        return cls(
            summary,
            _datetime(summary.enqueued_at),
            _datetime(summary.run_after),
            _datetime(summary.finished_at),
        )


@dataclass
class Page:
    rows: list[Row]
    state: str
    queue: str | None
    task: str | None
    offset: int
    limit: int
    total: int  # tasks in the state (and queue, for waiting ones)
    end: int  # the position after the last one examined: where the next page starts
    scanned: bool  # filtered within a window of positions, not by an index
    too_deep: bool = False  # merged waiting list asked beyond MAX_MERGED_OFFSET

    @property
    def has_next(self) -> bool:
        return self.end < self.total

    @property
    def has_previous(self) -> bool:
        return self.offset > 0

    @property
    def previous_offset(self) -> int:
        # A filtered page may end anywhere in its window: "previous" is then the first page.
        return 0 if self.scanned else max(0, self.offset - self.limit)

    @property
    def page_number(self) -> int:
        return self.offset // self.limit + 1

    @property
    def page_count(self) -> int:
        return max(1, -(-self.total // self.limit))


def state_counts(inspector: Inspector, queue: str | None) -> dict[str, int]:
    """Tasks in each state: waiting ones in ``queue`` (or all queues), the others in all."""
    client, keys = inspector.client, inspector.keys
    names = [queue] if queue else inspector.queues()
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zcard(keys.ready(name))
        pipe.zcard(keys.deferred(name))
    for key in (keys.running, keys.done("FAILED"), keys.done("SUCCESSFUL"), keys.dead):
        pipe.zcard(key)
    found = [int(n) for n in pipe.execute()]
    running, failed, successful, dead = found[-4:]
    return {"ready": sum(found[0:-4:2]), "deferred": sum(found[1:-4:2]), "running": running,
            "failed": failed, "successful": successful, "dead": dead}  # fmt: skip


def count(inspector: Inspector, state: str, queue: str | None) -> int:
    """How many tasks are in a state (waiting ones: in a queue, or in all queues)."""
    client, keys = inspector.client, inspector.keys
    if state in WAITING:
        zset = keys.ready if state == "ready" else keys.deferred
        names = [queue] if queue else inspector.queues()
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.zcard(zset(name))
        return sum(int(n) for n in pipe.execute())
    key = {"running": keys.running, "failed": keys.done("FAILED"),
           "successful": keys.done("SUCCESSFUL"), "dead": keys.dead}[state]  # fmt: skip
    return int(client.zcard(key))


def list_page(
    inspector: Inspector, state: str, queue: str | None, task: str | None, offset: int,
    limit: int,
) -> Page:  # fmt: skip
    """A page of tasks. Without a filter it is ``limit`` tasks by rank from ``offset``. With a
    task-path filter (or a queue filter on tasks that are not waiting, which are indexed per
    backend, not per queue) it shows the matches among at most SCAN_WINDOW positions."""
    if state in WAITING and not queue:
        names = inspector.queues()
        if len(names) == 1:  # one queue: page it by rank
            queue = names[0]
    total = count(inspector, state, queue)
    offset = max(0, min(offset, total))
    merged = state in WAITING and not queue
    if merged and offset > MAX_MERGED_OFFSET:
        return Page([], state, queue, task, offset, limit, total, offset, False, too_deep=True)
    scanned = bool(task) or bool(queue and state not in WAITING)
    if not scanned:
        rows = inspector.list_tasks(state, queue, offset, limit)
        return Page([Row.of(r) for r in rows], state, queue, task, offset, limit, total,
                    offset + limit, False)  # fmt: skip
    found: list[Row] = []
    position = offset
    stop = min(total, offset + SCAN_WINDOW)
    if merged:
        stop = min(stop, MAX_MERGED_OFFSET + limit)
    chunk = max(limit, 100)
    while position < stop and len(found) < limit:
        size = min(chunk, stop - position)
        for summary in inspector.list_tasks(state, queue, position, size, task=task):
            if queue and summary.queue != queue:  # dead-lettered ones: ops does not filter
                continue
            found.append(Row.of(summary))
        position += size
    return Page(found, state, queue, task, offset, limit, total, position, True)


# --- one task --------------------------------------------------------------------------------


def task_detail(inspector: Inspector, task_id: str) -> dict[str, Any]:
    """The task whole (``Inspector.task``), with where it is now: its ``state``."""
    data = inspector.task(task_id)
    queue = data.get("queue") if data["valid"] else data["raw"].get("queue")
    keys = inspector.keys
    pipe = inspector.client.pipeline(transaction=False)
    places = ["running", "failed", "successful", "dead"]
    pipe.zscore(keys.running, task_id)
    pipe.zscore(keys.done("FAILED"), task_id)
    pipe.zscore(keys.done("SUCCESSFUL"), task_id)
    pipe.zscore(keys.dead, task_id)
    if queue:
        places += ["ready", "deferred"]
        pipe.zscore(keys.ready(queue), task_id)
        pipe.zscore(keys.deferred(queue), task_id)
    scores = pipe.execute()
    in_places = [place for place, score in zip(places, scores, strict=True) if score is not None]
    # Dead-lettered wins: a dead task may also still be indexed as failed.
    data["state"] = "dead" if "dead" in in_places else (in_places[0] if in_places else None)
    for name in ("enqueued_at", "run_after", "started_at", "last_attempted_at", "finished_at"):
        data[f"{name}_dt"] = _datetime(data.get(name))
    return data


def can_retry(data: dict[str, Any]) -> bool:
    return data.get("state") in ("failed", "dead") or data.get("status") == "FAILED"


def can_cancel(data: dict[str, Any]) -> bool:
    return data.get("state") in (*WAITING, "running")


# --- actions ---------------------------------------------------------------------------------


@dataclass
class PurgePreview:
    cutoff: datetime
    successful: int
    failed: int

    @property
    def total(self) -> int:
        return self.successful + self.failed


def purge_preview(inspector: Inspector, older_than: float) -> PurgePreview:
    """How many results ``Inspector.purge(older_than)`` would delete now."""
    client, keys = inspector.client, inspector.keys
    seconds, _ = client.time()
    cutoff = int((int(seconds) - older_than) * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.done("SUCCESSFUL"), "-inf", cutoff)
    pipe.zcount(keys.done("FAILED"), "-inf", cutoff)
    successful, failed = (int(n) for n in pipe.execute())
    return PurgePreview(datetime.fromtimestamp(cutoff / 1000, tz=UTC), successful, failed)


def waiting_counts(inspector: Inspector, queue: str) -> tuple[int, int]:
    pipe = inspector.client.pipeline(transaction=False)
    pipe.zcard(inspector.keys.ready(queue))
    pipe.zcard(inspector.keys.deferred(queue))
    ready, deferred = (int(n) for n in pipe.execute())
    return ready, deferred


def drain(inspector: Inspector, queue: str, budget: float | None = None) -> int:
    """Cancel the waiting tasks of a queue for at most about ``budget`` seconds (default:
    DRAIN_BUDGET_SECONDS); the count cancelled."""
    deadline = time.monotonic() + (DRAIN_BUDGET_SECONDS if budget is None else budget)
    cancelled = 0
    for so_far in inspector.drain(queue):  # batches of 200
        cancelled = so_far
        if time.monotonic() > deadline:
            break
    return cancelled
