"""The last hour of a backend instance, minute by minute: what the dashboard's charts draw.

The scripts keep it themselves (``lua/lib/series.lua``), so a page reads the whole hour with
two ``HGETALL`` whatever the traffic:

* **Counts**: each claim adds the tasks it started to the current minute, each finish the
  tasks that succeeded and failed (so do expiries, cancels and lost workers that end a task
  FAILED). A script run adds its batch at once: one ``HINCRBY`` per event, not per task, on a
  small hash of the current minute (``minute``), folded into ``series`` when the next begins.
* **Depth**: the tasks waiting (ready, deferred and held back by a limit) and running, sampled
  once a minute by whichever worker's heartbeat asks first (``lua/sample.lua``). A minute with
  no live worker has no sample.

Minutes are those of the Redis clock (``TIME``), which every worker and web process agrees on.
The write that opens a minute drops the fields older than SERIES_MINUTES, so ``series`` holds
at most ``SERIES_MINUTES * len(NAMES)`` fields (300: about 7 KB, see docs/dashboard.md), and
both hashes expire an hour after traffic stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .keys import Keys
from .scripts import SERIES_MINUTES
from .sender import SyncClient, on_node_of

COUNTS = ("started", "succeeded", "failed")
DEPTH = ("waiting", "running")
NAMES = COUNTS + DEPTH
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Minute:
    """One minute of a backend instance: tasks counted in it, and its depth sample if any."""

    start_ms: int  # when the minute began (ms, Redis clock)
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    waiting: int | None = None  # None: no worker sampled this minute
    running: int | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    def value(self, name: str) -> int | None:
        return getattr(self, name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class LastHour:
    """SERIES_MINUTES minutes, oldest first; the last one is the current minute."""

    minutes: tuple[Minute, ...]

    def total(self, name: str) -> int:
        """A count's sum over the hour (``started``, ``succeeded`` or ``failed``)."""
        if name not in COUNTS:
            raise ValueError(f"{name!r} is not a count; one of {', '.join(COUNTS)}")
        return sum(m.value(name) or 0 for m in self.minutes)

    def with_depth_now(self, waiting: int, running: int) -> LastHour:
        """The hour with the current minute's depth replaced by counts made now (the overview
        has them anyway), so a chart ends at what the page's counts say."""
        current = replace(self.minutes[-1], waiting=waiting, running=running)
        return LastHour((*self.minutes[:-1], current))

    def latest(self, name: str) -> int | None:
        """The newest depth sample of the hour (``waiting`` or ``running``), None if none."""
        if name not in DEPTH:
            raise ValueError(f"{name!r} is not sampled; one of {', '.join(DEPTH)}")
        return next((v for m in reversed(self.minutes) if (v := m.value(name)) is not None), None)


def parse(raws: Iterable[Mapping[bytes, bytes]], now_ms: int) -> LastHour:
    """The hour ending with the minute of ``now_ms``, from the fields of the two hashes (a
    field in both, after the Redis clock stepped back, is summed). Fields that are not ours,
    or fall outside the hour (not dropped yet), are left out."""
    current = now_ms // MINUTE_MS
    first = current - SERIES_MINUTES + 1
    found: dict[int, dict[str, int]] = {}
    for raw in raws:
        for field, value in raw.items():
            minute_text, _, name = field.decode(errors="replace").partition(":")
            try:
                minute, number = int(minute_text), int(value)
            except ValueError:
                continue
            if name in NAMES and first <= minute <= current:
                values = found.setdefault(minute, {})
                values[name] = values.get(name, 0) + number
    return LastHour(tuple(
        Minute(minute * MINUTE_MS, **found.get(minute, {}))
        for minute in range(first, current + 1)
    ))  # fmt: skip


def last_hour(client: SyncClient, keys: Keys, now_ms: int | None = None) -> LastHour:
    """The last hour of the backend instance of ``keys``: two HGETALLs in one round trip, and a
    TIME unless the caller read the Redis clock already (``now_ms``). A key of another type
    reads as empty (the next write moves it aside)."""
    if now_ms is None:
        seconds, micros = client.time(**on_node_of(client, keys.prefix))
        now_ms = int(seconds) * 1000 + int(micros) // 1000
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.series)
    pipe.hgetall(keys.minute)
    replies = pipe.execute(raise_on_error=False)
    return parse((r for r in replies if isinstance(r, dict)), now_ms)
