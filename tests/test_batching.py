"""Group commit of script calls (redis_tasks.batching) against a real Redis: calls made together
share one script run and each keeps its own reply; a failed trip reaches every caller; a
flushed script cache is survived."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio

from redis_tasks.batching import MAX_BATCH, ScriptBatcher
from redis_tasks.scripts import Script
from redis_tasks.sender import AsyncSender, Call
from tests.redis_server import RedisServer

T = TypeVar("T")

# ARGV: a counter's name, the number of items, then one increment per item. Returns each
# item's value after its increment; fails as a whole if the counter is not a number.
SOURCE = """
local out = {}
for i = 1, tonumber(ARGV[2]) do out[i] = redis.call('INCRBY', ARGV[1], ARGV[2 + i]) end
return out
"""
COUNTER = Script("counter", SOURCE, hashlib.sha1(SOURCE.encode()).hexdigest())
OTHER_SOURCE = "return redis.call('GET', KEYS[1]) .. ARGV[1]"
OTHER = Script("other", OTHER_SOURCE, hashlib.sha1(OTHER_SOURCE.encode()).hexdigest())


def add_to(counter: str) -> Callable[[Sequence[Sequence[Any]]], Call]:
    return lambda items: Call(COUNTER, [], [counter, len(items), *(x for i in items for x in i)])


async def count(batcher: ScriptBatcher, counter: str, by: int) -> Any:
    return await batcher.merged(counter, [by], add_to(counter))


def run(
    calls: Callable[[ScriptBatcher, redis.asyncio.Redis], Awaitable[T]], redis_server: RedisServer
) -> T:
    """Run ``calls`` on a fresh event loop with a batcher of SOURCE."""

    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_server.url + "/12")
        try:
            return await calls(ScriptBatcher(AsyncSender(client)), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_calls_made_together_share_one_run_and_keep_their_own_replies(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    clean_redis.hset("broken", "a", "1")

    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[object]:
        await count(batcher, "counter", 0)  # loads the script
        await client.config_resetstat()
        jobs = [count(batcher, "counter", 1) for _ in range(50)]
        jobs += [count(batcher, "broken", 1) for _ in range(2)]
        replies = await asyncio.gather(*jobs, return_exceptions=True)
        stats = await client.info("commandstats")
        # One run per head (the counter's, the broken key's), both in one pipeline.
        assert stats["cmdstat_evalsha"]["calls"] == 2
        assert not any(name.startswith("cmdstat_script") for name in stats)
        return list(replies)

    replies = run(calls, redis_server)
    assert sorted(int(r) for r in replies[:50]) == list(range(1, 51))  # type: ignore[call-overload]
    assert all(isinstance(r, redis.ResponseError) for r in replies[50:])
    assert clean_redis.get("counter") == b"50"


def test_a_batch_is_split_into_bounded_runs(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    calls_made = 2 * MAX_BATCH + 3

    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[int]:
        await count(batcher, "counter", 0)
        await client.config_resetstat()
        replies = await asyncio.gather(*(count(batcher, "counter", 1) for _ in range(calls_made)))
        assert (await client.info("commandstats"))["cmdstat_evalsha"]["calls"] == 3
        return [int(r) for r in replies]

    assert sorted(run(calls, redis_server)) == list(range(1, calls_made + 1))


def test_a_flushed_script_cache_is_survived(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[int]:
        first = await count(batcher, "counter", 1)
        await client.script_flush()
        rest = await asyncio.gather(*(count(batcher, "counter", 1) for _ in range(5)))
        return [first, *rest]

    assert sorted(run(calls, redis_server)) == [1, 2, 3, 4, 5, 6]


def test_other_scripts_ride_in_the_same_pipeline(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    """A worker's claim (another script, called whole) goes with the finishes made together."""
    clean_redis.set("name", "x")

    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[object]:
        await count(batcher, "counter", 0)
        await client.script_flush()  # both scripts must be loaded again, each once
        await client.config_resetstat()
        jobs = [count(batcher, "counter", 1) for _ in range(3)]
        jobs += [
            batcher.run(Call(OTHER, ["name"], ["!"])),
            batcher.run(Call(OTHER, ["missing"], ["?"])),
        ]
        replies = await asyncio.gather(*jobs, return_exceptions=True)
        stats = await client.info("commandstats")
        assert stats["cmdstat_script|load"]["calls"] == 2
        assert stats["cmdstat_evalsha"]["calls"] == 2 * 3  # 3 runs, each sent again once loaded
        return list(replies)

    *counts, named, missing = run(calls, redis_server)
    assert sorted(int(c) for c in counts) == [1, 2, 3]  # type: ignore[call-overload]
    assert named == b"x!"
    assert isinstance(missing, redis.ResponseError)  # its own error, only its own caller's


def test_a_failed_trip_reaches_every_caller_and_the_next_trip_works() -> None:
    with RedisServer() as server:  # our own, so that it can be stopped and started again

        async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> int:
            await count(batcher, "counter", 1)
            server.kill()
            outcomes = await asyncio.gather(
                *(count(batcher, "counter", 1) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
            server.start()  # empty again: no data, no scripts
            return int(await count(batcher, "counter", 1))

        assert run(calls, server) == 1
