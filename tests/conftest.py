from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(int(os.environ["REDIS_TASKS_TEST_PORT"])).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Every test starts on an empty server (it is ours alone)."""
    client = redis.Redis.from_url(redis_server.url + "/12")
    client.flushall()
    yield client
    client.close()
