"""Seeing and managing a backend's queues, tasks and workers: what the CLI and dashboard show.

Every read is bounded (counts are O(1) per key, lists are pages of a sorted set), so a queue of
a million tasks costs no more to look at than one of ten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from . import progress
from .compat import TaskResultStatus
from .exceptions import InvalidTaskPayload
from .serialization import EPOCH, result_from_hash

if TYPE_CHECKING:
    from .backend import RedisBackend

VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as the Lua scripts' valid_id()
STATES = ("ready", "deferred", "running", "failed", "successful", "dead")
SUMMARY_FIELDS = ("path", "queue", "priority", "status", "enqueued_at", "finished_at",
                  "run_after", "workers", "errors")  # fmt: skip


class OperationRefused(Exception):
    """An action that does not apply to the task as it is (say, cancelling a running task)."""


def _us_to_iso(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    try:
        return (EPOCH + timedelta(microseconds=int(value))).isoformat()
    except (ValueError, OverflowError):
        return None


def _ms_to_iso(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC).isoformat()
    except ValueError:
        return None


@dataclass
class TaskSummary:
    id: str
    state: str
    task: str | None
    queue: str | None
    priority: int | None
    status: str | None
    enqueued_at: str | None
    finished_at: str | None
    run_after: str | None
    attempts: int
    errors: int

    @property
    def linkable(self) -> bool:
        """Whether the id is one the scripts accept (dead letters may hold any bytes)."""
        return VALID_ID.fullmatch(self.id) is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkerInfo:
    id: str
    host: str = ""
    pid: int = 0
    backends: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    concurrency: int = 0
    in_flight: list[str] = field(default_factory=list)
    started_at: str | None = None
    done: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_len(raw: bytes | None) -> int:
    if not raw:
        return 0
    try:
        value = json.loads(raw)
    except ValueError:
        return 0
    return len(value) if isinstance(value, list) else 0


class Inspector:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.store = backend.store
        self.keys = backend.store.keys
        self.client = backend.store.connections.sync

    # --- reading ----------------------------------------------------------------------------

    def queues(self) -> list[str]:
        known = cast(set[bytes], self.client.smembers(self.keys.queues))
        return sorted({q.decode(errors="replace") for q in known} | set(self.backend.queues))

    def paused(self) -> list[str]:
        """Queues no worker claims from (``pause``)."""
        members = cast(set[bytes], self.client.smembers(self.keys.paused))
        return sorted(q.decode(errors="replace") for q in members)

    def pause(self, queue: str) -> None:
        """No worker claims from ``queue`` until it is resumed; enqueues go on, and the state
        holds across worker restarts (it lives in Redis)."""
        self.client.sadd(self.keys.paused, queue)

    def resume(self, queue: str) -> None:
        """Workers claim from ``queue`` again (woken at once)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.srem(self.keys.paused, queue)
        pipe.lpush(self.keys.wake, "1")
        pipe.execute()

    def overview(self) -> dict[str, Any]:
        """Counts by state, per queue (paused ones too, even empty) and in all, and the live
        workers."""
        paused = self.paused()
        queues = sorted(set(self.queues()) | set(paused))
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.zcard(self.keys.ready(q))
            pipe.zcard(self.keys.deferred(q))
        pipe.zcard(self.keys.running)
        pipe.zcard(self.keys.done("FAILED"))
        pipe.zcard(self.keys.done("SUCCESSFUL"))
        pipe.zcard(self.keys.dead)
        pipe.hgetall(self.keys.held_n)
        *replies, held_raw = pipe.execute(raise_on_error=False)
        # A wrong-typed key (moved aside by the next claim) counts as empty, not as a failure.
        counts = [c if isinstance(c, int) else 0 for c in replies]
        held_raw = held_raw if isinstance(held_raw, dict) else {}
        held = {k.decode(errors="replace"): int(v) for k, v in held_raw.items() if int(v) > 0}
        per_queue = {q: {"ready": counts[2 * i], "deferred": counts[2 * i + 1]}
                     for i, q in enumerate(queues)}  # fmt: skip
        running, failed, successful, dead = counts[-4:]
        workers = [w.as_dict() for w in self.workers()]
        return {
            "backend": self.backend.alias,
            "namespace": self.keys.namespace,
            "queues": per_queue,
            "paused": paused,
            "held": held,  # per queue: tasks a rate or concurrency limit holds back now
            "totals": {
                "ready": sum(c["ready"] for c in per_queue.values()),
                "deferred": sum(c["deferred"] for c in per_queue.values()),
                "running": running,
                "failed": failed,
                "successful": successful,
                "dead": dead,
            },
            "workers": workers,
            "progress": self._progress_of(i for i, _ in self._ids("running", None, 0, 50)),
        }

    def _ids(
        self, state: str, queue: str | None, offset: int, limit: int
    ) -> list[tuple[str, float]]:
        k = self.keys
        if state in ("ready", "deferred"):
            zset = k.ready if state == "ready" else k.deferred
            if queue:  # one queue: a window by rank, whatever the offset
                return _decoded(
                    self.client.zrange(zset(queue), offset, offset + limit - 1, withscores=True)
                )
            names = self.queues()
            merged: list[tuple[str, float]] = []
            for name in names:  # each queue's first offset+limit, merged by score
                found = self.client.zrange(zset(name), 0, offset + limit - 1, withscores=True)
                merged += _decoded(found)
            return sorted(merged, key=lambda e: e[1])[offset : offset + limit]
        key = {"running": k.running, "failed": k.done("FAILED"),
               "successful": k.done("SUCCESSFUL"), "dead": k.dead}.get(state)  # fmt: skip
        if key is None:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        newest_first = state != "running"
        found = self.client.zrange(key, offset, offset + limit - 1, desc=newest_first,
                                   withscores=True)  # fmt: skip
        return _decoded(found)

    def list_tasks(
        self, state: str, queue: str | None = None, offset: int = 0, limit: int = 50,
        task: str | None = None,
    ) -> list[TaskSummary]:  # fmt: skip
        """A page of tasks in a state (newest first for finished ones), optionally filtered by
        task path (within the page's window)."""
        ids = self._ids(state, queue, offset, limit)
        pipe = self.client.pipeline(transaction=False)
        for task_id, _ in ids:
            pipe.hmget(self.keys.task(task_id), SUMMARY_FIELDS)
        rows = []
        for (task_id, _), values in zip(ids, pipe.execute(), strict=True):
            f = dict(zip(SUMMARY_FIELDS, values, strict=True))
            path = f["path"].decode(errors="replace") if f["path"] else None
            if (
                queue
                and state in ("running", "failed", "successful")
                and f["queue"] != queue.encode()
            ):
                continue
            if task and path != task:
                continue
            rows.append(TaskSummary(
                id=task_id, state=state, task=path,
                queue=f["queue"].decode(errors="replace") if f["queue"] else None,
                priority=_int_or_none(f["priority"]),
                status=f["status"].decode(errors="replace") if f["status"] else None,
                enqueued_at=_ms_to_iso(f["enqueued_at"]), finished_at=_ms_to_iso(f["finished_at"]),
                run_after=_us_to_iso(f["run_after"]),
                attempts=_json_len(f["workers"]), errors=_json_len(f["errors"]),
            ))  # fmt: skip
        return rows

    def task(self, task_id: str) -> dict[str, Any]:
        """One task whole: its result as the framework sees it, or its raw fields if broken."""
        fields = cast(dict[bytes, bytes], self.client.hgetall(self.keys.task(task_id)))
        if not fields:
            raise OperationRefused(f"no task {task_id!r} in backend {self.backend.alias!r}")
        raw = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        try:
            result = result_from_hash(task_id, fields)
        except InvalidTaskPayload as exc:
            return {"id": task_id, "valid": False, "problem": str(exc), "raw": raw}
        return {
            "id": task_id,
            "valid": True,
            "task": result.task.module_path,
            "queue": result.task.queue_name,
            "priority": result.task.priority,
            "status": str(result.status),
            "args": result.args,
            "kwargs": result.kwargs,
            "enqueued_at": _iso(result.enqueued_at),
            "run_after": _iso(result.task.run_after),
            "started_at": _iso(result.started_at),
            "last_attempted_at": _iso(result.last_attempted_at),
            "finished_at": _iso(result.finished_at),
            "attempts": result.attempts,
            "worker_ids": result.worker_ids,
            "errors": [
                {"exception": e.exception_class_path, "traceback": e.traceback}
                for e in result.errors
            ],
            "return_value": (
                result.return_value if result.status == TaskResultStatus.SUCCESSFUL else None
            ),
            "ttl": self.client.ttl(self.keys.task(task_id)),
            "progress": progress.parse(fields[b"progress"]) if b"progress" in fields else None,
            "workflow": (fields[b"wf"].decode().split("|")[0] if b"wf" in fields else None),
        }

    def _progress_of(self, task_ids: Iterable[str]) -> dict[str, Any]:
        """The progress the given tasks reported, by id (from the running set itself: a worker's
        published list of its tasks lags by up to a heartbeat)."""
        ids = list(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self.keys.task(task_id), "progress")
        found = zip(ids, pipe.execute(), strict=True)
        return {i: progress.parse(raw) for i, raw in found if raw is not None}

    def workers(self) -> list[WorkerInfo]:
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        self.client.zremrangebyscore(self.keys.workers, "-inf", now_ms)  # gone: no heartbeat
        ids = [w.decode() for w in cast(list[bytes], self.client.zrange(self.keys.workers, 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hget(self.keys.worker(worker_id), "info")
        found = []
        for worker_id, info in zip(ids, pipe.execute(), strict=True):
            if info is None:
                continue
            data = json.loads(info)
            known = {f.name for f in fields(WorkerInfo)} - {"id"}  # newer workers may say more
            found.append(WorkerInfo(id=worker_id, **{k: v for k, v in data.items() if k in known}))
        return found

    # --- acting -----------------------------------------------------------------------------

    def _operate(self, task_id: str, mode: str) -> None:
        refused = self.store.operate(task_id, mode)
        if refused is not None:
            raise OperationRefused(f"cannot {mode} task {task_id!r}: {refused}")

    def cancel(self, task_id: str) -> None:
        """A waiting task (ready, deferred, or held back by a limit) ends FAILED with
        TaskCancelled and never runs; a running one is cancelled by its worker within about a
        second (an async task at once, a sync one at its next ``cancellation.check()``) and
        ends the same way."""
        self._operate(task_id, "cancel")

    def retry(self, task_id: str) -> None:
        """A failed or dead-lettered task goes back to the front of its priority."""
        self._operate(task_id, "retry")

    def purge(self, older_than: float) -> int:
        """Delete finished results that finished more than ``older_than`` seconds ago."""
        now_s, _ = self.client.time()
        cutoff = int((now_s - older_than) * 1000)
        removed = 0
        for status in ("SUCCESSFUL", "FAILED"):
            while True:
                handled, deleted = self.store.purge_batch(status, cutoff, 500)
                removed += deleted
                if not handled:
                    break
        return removed

    def drain(self, queue: str) -> Iterator[int]:
        """Cancel every waiting task of a queue; yields the count cancelled so far."""
        done = 0
        for zset in (self.keys.deferred(queue), self.keys.ready(queue)):  # deferred may turn ready
            while ids := cast(list[bytes], self.client.zrange(zset, 0, 199)):
                for raw in ids:
                    try:
                        self.cancel(raw.decode())
                    except OperationRefused:
                        self.client.zrem(zset, raw)  # not a waiting task: nothing to cancel
                    done += 1
                yield done


def _decoded(entries: Any) -> list[tuple[str, float]]:
    return [(member.decode(errors="replace"), float(score)) for member, score in entries]


def _int_or_none(raw: bytes | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
