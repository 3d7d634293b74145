"""The Lua scripts, read from ``lua/``: each state change of a task is one atomic script.

A script file includes what it shares with others by an explicit line, ``--- @include
"lib/clock"`` (each file at most once per script, at its first include), and names what Python
owns by ``{{NAME}}``: the key suffixes of ``keys.py``, the score constants below and the fields
a claim returns. Both are resolved here, once, when the package is imported; an unknown name or
a missing file fails loudly then. Times come from the Redis server's clock (``TIME``), never
from a client's, so workers on hosts whose clocks disagree still agree on due times, dispatch
deadlines and lease deadlines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from . import keys

# A ready task's score: (100 - priority) * PRIORITY_STEP + its sequence number, so highest
# priority first, then first in, first out; exact in a double for 2^39 enqueues per priority.
PRIORITY_STEP = 2**40
# Due deferred tasks are promoted into the lower half of their priority's band (below every
# sequence number), ordered by their due time modulo DUE_WRAP.
PROMOTED_OFFSET = 2**39
DUE_WRAP = 2**38
KEEP_ASIDE_MS = 7 * 24 * 3600 * 1000  # dead-lettered ids and corrupt keys are kept a week
# The series of the dashboard's charts keeps this many minutes (lib/series.lua, series.py).
SERIES_MINUTES = 60

# The fields of a task hash that a claim returns (what running it needs), in this order.
CLAIM_FIELDS = (
    "path", "queue", "priority", "backend", "args", "kwargs", "run_after", "enqueued_at",
    "started_at", "last_attempted_at", "errors", "workers", "uncounted", "status", "expires_at",
    "sig", "limits", "wf_prev", "trace",
)  # fmt: skip

SPLICED: dict[str, str] = {
    "READY": keys.READY,
    "DEFERRED": keys.DEFERRED,
    "TASK": keys.TASK,
    "UNIQUE": keys.UNIQUE,
    "DONE": keys.DONE,
    "DEAD": keys.DEAD,
    "STATS": keys.STATS,
    "SERIES": keys.SERIES,
    "MINUTE": keys.MINUTE,
    "RUNNING": keys.RUNNING,
    "QUEUES": keys.QUEUES,
    "HEADS": keys.HEADS,
    "WAKE": keys.WAKE,
    "EXPIRY": keys.EXPIRY,
    "SEQUENCE": keys.SEQUENCE,
    "CSLOTS": keys.CSLOTS,
    "RSTARTS": keys.RSTARTS,
    "HELD": keys.HELD,
    "HELD_DUE": keys.HELD_DUE,
    "HELD_N": keys.HELD_N,
    "PAUSED": keys.PAUSED,
    "CANCEL": keys.CANCEL,
    "DUE": keys.DUE,
    "WORKFLOW": keys.WORKFLOW,
    "WAITING": keys.WAITING,
    "NOTIFY": keys.NOTIFY,
    "PARKED": keys.PARKED,
    "PARKED_ANY": keys.PARKED_ANY,
    "PARKING": keys.PARKING,
    "INBOX": keys.INBOX,
    "PRIORITY_STEP": str(PRIORITY_STEP),
    "PROMOTED_OFFSET": str(PROMOTED_OFFSET),
    "DUE_WRAP": str(DUE_WRAP),
    "KEEP_ASIDE_MS": str(KEEP_ASIDE_MS),
    "SERIES_MINUTES": str(SERIES_MINUTES),
    "CLAIM_FIELDS": "{" + ", ".join(f"'{f}'" for f in CLAIM_FIELDS) + "}",
}
INCLUDE = re.compile(r'^--- @include "([\w/]+)"\s*$', re.MULTILINE)
NAME = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Script:
    """One script: its file name, its whole source, and the SHA1 that EVALSHA names it by."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


def _expand(name: str, seen: set[str], stack: tuple[str, ...] = ()) -> str:
    """The file's text with its includes put in place (a file already in the script: nothing)."""
    if name in stack:
        raise ValueError(f"Lua include cycle: {' -> '.join((*stack, name))}")
    if name in seen:
        return ""
    seen.add(name)
    return INCLUDE.sub(lambda m: _expand(m[1], seen, (*stack, name)), _read(name))


def _splice(name: str, text: str) -> str:
    def value(match: re.Match[str]) -> str:
        if match[1] not in SPLICED:
            raise ValueError(f"lua/{name}.lua names {{{{{match[1]}}}}}, which scripts.py lacks")
        return SPLICED[match[1]]

    return NAME.sub(value, text)


def load(name: str) -> Script:
    source = _splice(name, _expand(name, set()))
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


ENQUEUE = load("enqueue")
TICK = load("tick")
CLAIM = load("claim")
FINISH = load("finish")
REQUEUE = load("requeue")
RENEW = load("renew")
OPERATE = load("operate")
WORKFLOW = load("workflow")
PROGRESS = load("progress")
PURGE = load("purge")
SAMPLE = load("sample")
UNPARK = load("unpark")
ALL = (
    ENQUEUE, TICK, CLAIM, FINISH, REQUEUE, RENEW, OPERATE, PURGE, WORKFLOW, PROGRESS, SAMPLE,
    UNPARK,
)  # fmt: skip
