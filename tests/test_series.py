"""The last hour per minute (redis_tasks.series, lua/lib/series.lua, lua/sample.lua): counts kept
by the claim and finish scripts at one command per event and script run, the depth sampled once
a minute, old minutes dropped so the hash stays small."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import redis
from django.utils import timezone

from redis_tasks import calls, series
from redis_tasks.calls import ClaimBatch
from redis_tasks.compat import task_backends
from redis_tasks.sender import SyncSender
from redis_tasks.store import TaskStore
from tests import tasks
from tests.helpers import burst, wait_until


def store() -> TaskStore:
    return task_backends["default"].store


def claim(count: int) -> ClaimBatch:
    async def main() -> ClaimBatch:
        try:
            return await store().claim("series-test", count)
        finally:
            await store().connections.aclose()

    return asyncio.run(main())


def decoded(raw: Any) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def minute_of(field: str) -> int:
    return int(field.partition(":")[0])


def hincrbys(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_hincrby", {}).get("calls", 0))


def test_the_last_hour_counts_the_tasks_started_succeeded_and_failed(
    clean_redis: redis.Redis,
) -> None:
    for i in range(3):
        tasks.add.enqueue(i, i)
    tasks.fail.enqueue()
    tasks.fails_then_waits.enqueue()  # started, then retried in a minute: neither outcome yet
    tasks.add.using(queue_name="later").enqueue(1, 1)  # never started
    burst(queues=["default"])
    hour = series.last_hour(clean_redis, store().keys)
    assert len(hour.minutes) == series.SERIES_MINUTES == 60
    assert hour.minutes[1].start_ms - hour.minutes[0].start_ms == 60_000
    totals = {name: hour.total(name) for name in series.COUNTS}
    assert totals == {"started": 5, "succeeded": 3, "failed": 1}
    # The burst ran in the last minute or two: the counts are there, not spread over the hour.
    assert sum(m.started for m in hour.minutes[-2:]) == 5
    # The burst worker's heartbeat sampled the depth as it started.
    assert hour.latest("waiting") is not None and hour.latest("running") is not None


def test_a_claim_and_a_finish_add_one_command_per_event_whatever_the_batch(
    clean_redis: redis.Redis,
) -> None:
    """The hot path: the series costs one HINCRBY per charted event and script run (on a hash
    of a few fields), not one per task."""
    task_backends["default"].enqueue_many(tasks.add, [((i, i), {}) for i in range(20)])
    before = hincrbys(clean_redis)
    batch = claim(20)
    assert len(batch.claims) == 20
    assert hincrbys(clean_redis) - before == 2  # stats' 'started' and the minute's
    items = [
        calls.finish_item(c, "SUCCESSFUL", "0", None) if i % 2
        else calls.finish_item(c, "FAILED", None, '["builtins.ValueError", "ValueError: x"]')
        for i, c in enumerate(batch.claims)
    ]  # fmt: skip
    keys = store().keys
    before = hincrbys(clean_redis)
    head = calls.finish_head(keys, store().settings)
    assert all(SyncSender(clean_redis).run(calls.finish(keys, head, items)))
    assert hincrbys(clean_redis) - before == 4  # 'succeeded' and 'failed', twice each
    hour = series.last_hour(clean_redis, keys)
    assert {name: hour.total(name) for name in series.COUNTS} == {
        "started": 20, "succeeded": 10, "failed": 10,
    }  # fmt: skip


def test_old_minutes_are_dropped_so_the_hash_stays_small(clean_redis: redis.Redis) -> None:
    keys = store().keys
    seconds, _ = clean_redis.time()
    minute = seconds // 60
    # Two hours of busy minutes in the series, and the last minute's counts not folded yet.
    clean_redis.hset(keys.series, mapping={
        f"{m}:{name}": 123456 for m in range(minute - 120, minute) for name in series.NAMES
    })  # fmt: skip
    clean_redis.hset(keys.minute, "garbage", 1)
    clean_redis.hset(keys.minute, f"{minute - 1}:started", 7)
    tasks.add.enqueue(1, 1)
    claim(1)  # opens this minute: folds the last one into the series and drops what is old
    current = decoded(clean_redis.hgetall(keys.minute))
    assert len(current) == 1
    (field,) = current
    now = minute_of(field)  # the script's minute (this one, or the next if it began since)
    assert field == f"{now}:started" and current[field] == 1
    kept = decoded(clean_redis.hgetall(keys.series))
    assert all(now - series.SERIES_MINUTES < minute_of(f) < now for f in kept)
    assert len(kept) <= series.SERIES_MINUTES * len(series.NAMES)
    assert kept.get(f"{minute - 1}:started") == 123456 + 7  # folded, if still in the hour
    for key in (keys.series, keys.minute):
        assert 0 < clean_redis.ttl(key) <= (series.SERIES_MINUTES + 1) * 60
    hour = series.last_hour(clean_redis, keys)
    assert hour.total("started") == 59 * 123456 + 7 + 1 or now != minute

    # The memory of a full hour (docs/dashboard.md): a listpack under Redis's default
    # hash-max-listpack-entries (512); a hashtable on servers configured below 300.
    clean_redis.delete(keys.series)
    clean_redis.hset(keys.series, mapping={
        f"{m}:{name}": 123456 for m in range(now - 59, now + 1) for name in series.NAMES
    })  # fmt: skip
    used = clean_redis.memory_usage(keys.series, samples=0)
    limit = 8 * 1024 if clean_redis.object("encoding", keys.series) == b"listpack" else 32 * 1024
    assert used is not None and used < limit, used


def test_the_depth_is_sampled_once_a_minute_whoever_asks(clean_redis: redis.Redis) -> None:
    keys = store().keys
    for n in range(3):  # concurrency_limit=2: a claim of all three holds the third back
        tasks.two_at_once.enqueue("/dev/null", n)
    tasks.add.enqueue(1, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=2)).enqueue(3, 4)
    assert len(claim(4).claims) == 3
    assert sum(int(v) for v in clean_redis.hvals(keys.held_n)) == 1
    now_ms, taken = store().sample_depth(clean_redis)
    assert taken
    minute = now_ms // 60_000
    sample = decoded(clean_redis.hgetall(keys.series))
    # Waiting: the held-back one and the deferred one (what maxsize counts); running: three.
    assert sample == {f"{minute}:waiting": 2, f"{minute}:running": 3}
    tasks.add.enqueue(5, 6)
    again_ms, taken_again = store().sample_depth(clean_redis)
    if again_ms // 60_000 == minute:  # the same minute: its sample stays as it was
        assert not taken_again and decoded(clean_redis.hgetall(keys.series)) == sample
    hour = series.last_hour(clean_redis, keys, now_ms)
    assert (hour.minutes[-1].waiting, hour.minutes[-1].running) == (2, 3)
    assert hour.minutes[-2].waiting is None  # no sample: unknown, not zero


def test_a_worker_heartbeat_samples_the_depth(clean_redis: redis.Redis, background: Any) -> None:
    background("default")
    keys = store().keys
    wait_until(lambda: any(f.endswith(b":waiting") for f in clean_redis.hkeys(keys.series)))
    hour = series.last_hour(clean_redis, keys)
    assert (hour.latest("waiting"), hour.latest("running")) == (0, 0)


def test_parse_keeps_the_hour_and_ignores_what_is_not_its_own() -> None:
    now_ms = 1_000 * 60_000 + 30_000  # half way through minute 1000
    raws = [
        {b"1000:started": b"4", b"941:failed": b"1", b"940:failed": b"9", b"1001:started": b"9",
         b"1000:waiting": b"12", b"junk": b"1", b"1000:other": b"1", b"999:failed": b"x"},
        {b"1000:started": b"1"},  # a field in both hashes is summed
    ]  # fmt: skip
    hour = series.parse(raws, now_ms)
    assert [m.start_ms // 60_000 for m in (hour.minutes[0], hour.minutes[-1])] == [941, 1000]
    assert hour.total("started") == 5 and hour.total("failed") == 1
    assert hour.latest("waiting") == 12 and hour.latest("running") is None
    assert hour.minutes[-1].at.timestamp() == 1000 * 60
    now = hour.with_depth_now(3, 4)
    assert (now.minutes[-1].waiting, now.minutes[-1].running, now.total("started")) == (3, 4, 5)
