from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_tasks.background import BackgroundWorker
from redis_tasks.compat import task_backends
from redis_tasks.worker import Worker
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


@pytest.fixture
def background() -> Iterator[Any]:
    """Start workers on their own threads: `background(concurrency=2)`; stopped at the end."""
    running: list[BackgroundWorker] = []

    def start(*aliases: str, **options: Any) -> Worker:
        worker = Worker([task_backends[a] for a in aliases or ("default",)], **options)
        running.append(BackgroundWorker(worker).start())
        return worker

    yield start
    for bw in running:
        bw.stop(30)
        assert not bw.thread.is_alive()
