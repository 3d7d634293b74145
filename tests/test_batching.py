"""Group commit of finishes (redis_tasks.batching) against a real Redis: each call keeps its own
reply and its own atomic script; a failed trip reaches every caller; a flushed script cache is
survived."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import redis.asyncio

from redis_tasks.batching import ScriptBatcher
from tests.redis_server import RedisServer

T = TypeVar("T")

# Returns the new value, or an error for a key that is not a counter.
SOURCE = """
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then return redis.error_reply('not a counter') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


def run(
    calls: Callable[[ScriptBatcher, redis.asyncio.Redis], Awaitable[T]], redis_server: RedisServer
) -> T:
    """Run ``calls`` on a fresh event loop with a batcher of SOURCE."""

    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_server.url + "/12")
        try:
            batcher = ScriptBatcher(client, client.register_script(SOURCE))
            return await calls(batcher, client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_calls_made_together_share_one_trip_and_keep_their_own_replies(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    clean_redis.hset("broken", "a", "1")

    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[object]:
        await batcher.call(["counter"], [0])  # loads the script
        await client.config_resetstat()
        jobs = [batcher.call(["counter"], [1]) for _ in range(50)]
        jobs.append(batcher.call(["broken"], [1]))
        replies = await asyncio.gather(*jobs, return_exceptions=True)
        stats = await client.info("commandstats")
        # One EVALSHA per call (each its own script run), and no SCRIPT EXISTS per trip.
        assert stats["cmdstat_evalsha"]["calls"] == 51
        assert not any(name.startswith("cmdstat_script") for name in stats)
        return list(replies)

    replies = run(calls, redis_server)
    assert sorted(int(r) for r in replies[:50]) == list(range(1, 51))  # type: ignore[call-overload]
    assert isinstance(replies[50], redis.ResponseError)
    assert "not a counter" in str(replies[50])
    assert clean_redis.get("counter") == b"50"


def test_a_flushed_script_cache_is_survived(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> list[int]:
        first = await batcher.call(["counter"], [1])
        await client.script_flush()
        rest = await asyncio.gather(*(batcher.call(["counter"], [1]) for _ in range(5)))
        return [first, *rest]

    assert sorted(run(calls, redis_server)) == [1, 2, 3, 4, 5, 6]


def test_a_failed_trip_reaches_every_caller_and_the_next_trip_works() -> None:
    with RedisServer() as server:  # our own, so that it can be stopped and started again

        async def calls(batcher: ScriptBatcher, client: redis.asyncio.Redis) -> int:
            await batcher.call(["counter"], [1])
            server.kill()
            outcomes = await asyncio.gather(
                *(batcher.call(["counter"], [1]) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
            server.start()  # empty again: no data, no scripts
            return int(await batcher.call(["counter"], [1]))

        assert run(calls, server) == 1
