"""Each script's call and reply, as plain functions: KEYS and ARGV built from a backend
instance's keys and settings, and replies read back into Python values. No I/O here: the
senders (``sender.py``) run the calls, sync or asyncio alike; the store (``store.py``) turns
their failures into the errors callers see.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import scripts
from .keys import Keys
from .sender import Call

CLAIM_FIELDS = tuple(name.encode() for name in scripts.CLAIM_FIELDS)


class Settings(NamedTuple):
    """What the scripts are told of a backend instance's options (milliseconds, '' = none)."""

    alias: str
    maxsize: int | None
    ttl_ms: int | None
    result_ttl: int | None
    lease_ms: int
    max_attempts: int


def _blank(value: Any) -> Any:
    return "" if value is None else value


# --- enqueue --------------------------------------------------------------------------------


class EnqueueRequest(NamedTuple):
    """One task call, already validated and serialised (a tuple: a bulk enqueue makes one per
    call, and a frozen dataclass's ``__init__`` costs several times as much)."""

    task_id: str
    queue: str
    priority: int
    path: str
    args_json: str
    kwargs_json: str
    run_after_us: int | None  # exact, as the caller gave it; due at its millisecond
    unique_key: str | None = None
    max_attempts: int | None = None  # the task's own; None: the backend's
    signature: str | None = None  # with sign_payloads (signatures.py)
    limits: str | None = None  # the task's own limit groups (limits.task_limits)
    workflow: str | None = None  # '<workflow id>|<position>' (workflows.py)
    trace: str | None = None  # the W3C context of its enqueue's span (tracing.py)


class Enqueued(NamedTuple):
    now_ms: int
    # Per request: None for a task queued now, else the id that stands for it: an identical
    # unique task already queued or running, or its own id when this very call was queued by an
    # earlier send (see lib/enqueue_batch.lua).
    existing: list[str | None]


class EnqueueRefused(NamedTuple):
    """Nothing was queued: the backend would pass maxsize (``waiting`` tasks wait), or an id is
    taken by another task."""

    waiting: int | None = None
    taken_id: str | None = None


def _batch(settings: Settings, requests: Sequence[EnqueueRequest]) -> list[Any]:
    argv: list[Any] = [_blank(settings.maxsize), _blank(settings.ttl_ms), settings.alias,
                       len(requests)]  # fmt: skip
    for r in requests:
        argv += [
            r.task_id, r.queue, r.priority, _blank(r.run_after_us), r.path, r.args_json,
            r.kwargs_json, r.unique_key or "", _blank(r.max_attempts), r.signature or "",
            r.limits or "", r.workflow or "", r.trace or "",
        ]  # fmt: skip
    return argv


@functools.lru_cache(maxsize=64)
def _enqueue_keys(k: Keys) -> tuple[str, ...]:
    return (k.queues, k.sequence, k.expiry, k.wake, k.heads, k.due)


def enqueue(k: Keys, settings: Settings, requests: Sequence[EnqueueRequest]) -> Call:
    return Call(scripts.ENQUEUE, _enqueue_keys(k), [k.prefix, *_batch(settings, requests)])


def enqueued(reply: list[Any]) -> Enqueued | EnqueueRefused:
    if reply[0] == 1:
        return Enqueued(int(reply[1]), [x.decode() or None for x in reply[2:]])
    if reply[0] == 0:
        return EnqueueRefused(waiting=int(reply[1]))
    return EnqueueRefused(taken_id=reply[1].decode())


def workflow(
    k: Keys, settings: Settings, workflow_id: str, record: dict[str, str],
    requests: Sequence[EnqueueRequest],
) -> Call:  # fmt: skip
    """A workflow's record and its first tasks, all or none; its reply is the enqueue's."""
    return Call(
        scripts.WORKFLOW,
        [*_enqueue_keys(k), k.workflow(workflow_id)],
        [k.prefix, json.dumps(record), *_batch(settings, requests)],
    )


def tick(
    k: Keys, settings: Settings, schedule: str, tick_ms: int, enqueue: bool,
    request: EnqueueRequest,
) -> Call:  # fmt: skip
    return Call(
        scripts.TICK,
        [*_enqueue_keys(k), k.schedule(schedule)],
        [k.prefix, tick_ms, "enqueue" if enqueue else "skip", *_batch(settings, [request])],
    )


def ticked(reply: list[Any]) -> str:
    """'enqueued', 'unique' (an identical unique task is queued), 'done' (this or a later tick
    was already handled), 'skipped' or 'full'."""
    if int(reply[0]) == 1 and reply[2]:
        return "unique"  # an identical unique task already queued stands for this tick
    return {1: "enqueued", 0: "full", 2: "done", 3: "skipped"}.get(int(reply[0]), "taken")


# --- claim ----------------------------------------------------------------------------------

# How often, at most, claims sweep for passed dispatch deadlines and lost leases, and check the
# queue index against the set of queues (milliseconds, across all workers of an instance).
SWEEP_MS = 100
RECONCILE_MS = 2000


@dataclass(frozen=True)
class Claim:
    """A task this worker now owns: the lease token and the stored hash."""

    task_id: str
    token: str
    fields: dict[bytes, bytes]


@dataclass(frozen=True)
class ClaimBatch:
    now_ms: int
    next_due_ms: int | None
    claims: list[Claim]
    quarantined: list[str]  # keys of a wrong type that the claim renamed aside
    received_at: float  # time.monotonic() when the reply was read


def claim(
    k: Keys, settings: Settings, worker_id: str, count: int, queues: Sequence[str],
    thorough: bool, queue_limits: str = "", park_ms: int | None = None, parked: bool = False,
) -> Call:  # fmt: skip
    """``park_ms``: park the worker for a hand-off that long if the queues run dry;
    ``parked``: it parked at its last claim (lua/lib/parking.lua)."""
    return Call(
        scripts.CLAIM,
        [k.running, k.expiry, k.queues, k.dead, k.wake, k.workers, k.heads, k.due, k.swept,
         k.reconciled],
        [k.prefix, worker_id, settings.lease_ms, count, settings.max_attempts,
         _blank(settings.result_ttl), SWEEP_MS, RECONCILE_MS,
         "1" if thorough else "0", queue_limits, _blank(park_ms), "1" if parked else "0",
         *queues],
    )  # fmt: skip


def _claim_of(entry: Sequence[Any]) -> Claim:
    width = len(CLAIM_FIELDS)
    values = zip(CLAIM_FIELDS, entry[:width], strict=True)
    fields = {name: value for name, value in values if value is not None}
    return Claim(entry[width].decode(), entry[width + 1].decode(), fields)


def claimed(reply: list[Any]) -> ClaimBatch:
    claims = [_claim_of(entry) for entry in reply[3:]]
    next_due = int(reply[1])
    quarantined = [key.decode(errors="replace") for key in reply[2]]
    return ClaimBatch(int(reply[0]), None if next_due < 0 else next_due, claims, quarantined,
                      time.monotonic())  # fmt: skip


def handed(row_json: bytes | str) -> Claim:
    """A task handed to the worker at enqueue (lua/lib/handoff.lua): its claim row, as JSON
    in the worker's inbox (a field the hash lacks is ``false`` there)."""
    row = json.loads(row_json)
    return _claim_of([None if v is False else v.encode() for v in row])


def unpark(k: Keys, worker_id: str) -> Call:
    """Leave the parked list; the reply holds the rows of tasks handed over meanwhile."""
    return Call(scripts.UNPARK, [k.parking], [k.prefix, worker_id, len(CLAIM_FIELDS)])


def unparked(reply: list[Any]) -> list[Claim]:
    return [_claim_of(entry) for entry in reply]


# --- finish, requeue, renew, sample ---------------------------------------------------------

FINISH_ITEM_WIDTH = 5


def finish_head(k: Keys, settings: Settings) -> tuple[Any, ...]:
    """What every finish of a backend instance starts with (finishes with the same head share
    a script run)."""
    return (k.prefix, _blank(settings.result_ttl))


def finish_item(
    claim: Claim, status: str, return_json: str | None, error_json: str | None
) -> tuple[Any, ...]:
    return (claim.task_id, claim.token, status, return_json or "", error_json or "")


def finish(k: Keys, head: Sequence[Any], items: Sequence[Sequence[Any]]) -> Call:
    """One run storing many outcomes; its reply holds, per item, finished_at (ms) or 0 when the
    lease was lost (the outcome was refused)."""
    return Call(
        scripts.FINISH, [k.running], [*head, len(items), *(x for item in items for x in item)]
    )


def requeue(
    k: Keys, settings: Settings, claim: Claim, delay: float, error_json: str | None,
    handback: bool,
) -> Call:  # fmt: skip
    """Its reply: when the task is due again (ms), or 0 when the lease was lost."""
    return Call(
        scripts.REQUEUE,
        [k.task(claim.task_id), k.running, k.expiry, k.wake, k.queues, k.heads, k.due],
        [k.prefix, claim.task_id, claim.token, int(delay * 1000), error_json or "",
         "1" if handback else "0", _blank(settings.ttl_ms), _blank(settings.result_ttl)],
    )  # fmt: skip


def renew(k: Keys, settings: Settings, leases: dict[str, str]) -> Call:
    argv: list[Any] = [k.prefix, settings.lease_ms]
    for task_id, token in leases.items():
        argv += [task_id, token]
    return Call(scripts.RENEW, [k.running], argv)


def renewed(reply: list[Any]) -> list[str]:
    """The ids whose lease was lost."""
    return [x.decode() for x in reply]


def sample(k: Keys) -> Call:
    """The depth of the minute for the charts (series.py); its reply: (now_ms, taken), where
    taken is False when this minute was sampled already."""
    return Call(scripts.SAMPLE, [k.series, k.queues, k.running], [k.prefix])


def sampled(reply: list[Any]) -> tuple[int, bool]:
    return int(reply[0]), reply[1] == 1


# --- operators ------------------------------------------------------------------------------


def operate(k: Keys, settings: Settings, task_id: str, mode: str) -> Call:
    """``mode`` 'cancel' or 'retry'; its reply is 1, or why not (bytes)."""
    return Call(
        scripts.OPERATE,
        [k.task(task_id), k.expiry, k.queues, k.wake, k.heads],
        [k.prefix, task_id, mode, _blank(settings.result_ttl)],
    )


def purge(k: Keys, status: str, cutoff_ms: int, batch: int) -> Call:
    """Its reply: (ids handled, results deleted); 0 handled: nothing older is left."""
    return Call(scripts.PURGE, [k.done(status)], [k.prefix, cutoff_ms, batch])
