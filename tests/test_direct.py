"""The direct lanes (shims/redis_py.py): the scripts, get_result's read and the worker's
pipelines sent down connections they keep themselves, with what redis-py's pool guarantees
kept; and the option that turns them off."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.shims import redis_py
from redis_tasks.shims.redis_py import AsyncDirectLane, DirectLane
from tests import tasks
from tests.helpers import burst
from tests.redis_server import RedisServer, free_port

# The lanes are used only on the redis-py releases they were checked against; on any other the
# backend takes redis-py's own path (tests/test_shims.py shows it), and every other test runs it.
pytestmark = pytest.mark.skipif(
    not redis_py.checked(), reason=f"direct lanes are off on redis-py {redis.__version__}"
)


def lane_on(server: RedisServer, **options: float) -> DirectLane:
    lane = DirectLane.for_client(redis.Redis.from_url(server.url, **options))  # type: ignore[arg-type]
    assert lane is not None
    return lane


def test_enqueue_and_get_result_go_down_the_lane_and_ride_out_a_redis_restart() -> None:
    server = RedisServer(free_port()).start()
    try:
        backend = RedisBackend("default", {"BACKEND": "x", "LOCATION": server.url + "/3"})
        first = backend.enqueue(tasks.add, [1, 2], {})
        lane = backend.store.connections.sender.lane
        assert lane is not None and lane.idle == 1  # the enqueue's connection, kept
        server.kill()
        server.start()  # the kept connection is now closed by the other end
        second = backend.enqueue(tasks.add, [3, 4], {})
        assert backend.get_result(second.id).status == TaskResultStatus.READY
        assert first.id != second.id
    finally:
        server.stop()


def test_enqueue_loads_the_script_again_after_a_script_flush(clean_redis: redis.Redis) -> None:
    backend = task_backends["default"]
    backend.enqueue(tasks.add, [1, 2], {})
    clean_redis.script_flush()
    result = backend.enqueue(tasks.add, [5, 6], {})
    burst()
    assert backend.get_result(result.id).return_value == 11


@pytest.mark.parametrize("hiredis_packs", [True, False], ids=["hiredis", "redis-py's packer"])
def test_a_command_gets_its_reply_whoever_packs_it(
    redis_server: RedisServer, hiredis_packs: bool
) -> None:
    lane = lane_on(redis_server)
    lane.hiredis = lane.hiredis and hiredis_packs
    assert lane("HSET", "test-direct:hash", "a", "1", "b", 2) == 2
    assert lane("HSET", "test-direct:hash", "c", memoryview(b"3")) == 1  # hiredis refuses it
    assert lane("HMGET", "test-direct:hash", "a", "b", "c") == [b"1", b"2", b"3"]
    with pytest.raises(redis.DataError):  # what no packer sends is refused, nothing sent
        lane("ECHO", object())
    assert lane("ECHO", "still clean") == b"still clean"


def test_direct_lanes_can_be_turned_off(redis_server: RedisServer) -> None:
    backend = RedisBackend("default", {"BACKEND": "x", "LOCATION": redis_server.url + "/3",
                                       "direct_lanes": False})  # fmt: skip
    result = backend.enqueue(tasks.add, [1, 2], {})
    assert backend.store.connections.sender.lane is None
    assert backend.get_result(result.id).status == TaskResultStatus.READY

    async def lane_of_the_loop() -> object:
        return backend.store.connections.asender.lane

    assert asyncio.run(lane_of_the_loop()) is None


def test_a_reply_cut_off_by_a_timeout_is_never_read_as_the_next_reply(
    redis_server: RedisServer,
) -> None:
    lane = lane_on(redis_server, socket_timeout=0.2)
    with pytest.raises(redis.TimeoutError):
        lane("BLPOP", "test-direct:nothing", 0.6)  # its nil reply comes after the timeout
    assert lane("ECHO", "next") == b"next"


def test_an_error_reply_leaves_the_connection_in_use(redis_server: RedisServer) -> None:
    lane = lane_on(redis_server)
    lane("SET", "test-direct:text", "x")
    client_id = lane("CLIENT", "ID")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        lane("INCR", "test-direct:text")
    assert lane("CLIENT", "ID") == client_id
    assert lane("GET", "test-direct:text") == b"x"


def test_a_forked_child_opens_connections_of_its_own(redis_server: RedisServer) -> None:
    lane = lane_on(redis_server)
    parent_id = lane("CLIENT", "ID")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the id of the connection it used, and leave
        try:
            os.write(write_end, str(lane("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_id = int(os.read(read_end, 64))
    os.close(read_end)
    assert child_id != parent_id
    assert lane("CLIENT", "ID") == parent_id  # the parent's connection was not disturbed


def test_only_plain_single_server_clients_get_a_lane(redis_server: RedisServer) -> None:
    assert DirectLane.for_client(redis.Redis.from_url(redis_server.url)) is not None
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", free_port())])
    assert DirectLane.for_client(sentinel.master_for("mymaster")) is None
    assert (
        DirectLane.for_client(redis.Redis.from_url(redis_server.url, single_connection_client=True))
        is None
    )


def test_the_asyncio_lane_rides_out_a_restart_a_cancellation_and_error_replies() -> None:
    server = RedisServer(free_port()).start()

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(server.url)
        lane = AsyncDirectLane.for_client(client)
        assert lane is not None
        try:
            replies = await lane.pipeline([("SET", "k", "x"), ("INCR", "k"), ("GET", "k")])
            assert replies[0] is True or replies[0] == b"OK"
            assert isinstance(replies[1], redis.ResponseError) and replies[2] == b"x"
            server.kill()
            server.start()  # the kept connection is now closed by the other end
            assert await lane.pipeline([("ECHO", "after restart")]) == [b"after restart"]
            with pytest.raises(TimeoutError):  # cancelled while its reply is still to come
                await asyncio.wait_for(lane.pipeline([("BLPOP", "nothing", 0.6)]), 0.2)
            assert await lane.pipeline([("ECHO", "next")]) == [b"next"]
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_only_plain_asyncio_clients_get_a_lane(redis_server: RedisServer) -> None:
    assert AsyncDirectLane.for_client(redis.asyncio.Redis.from_url(redis_server.url)) is not None
    sentinel = redis.asyncio.sentinel.Sentinel([("127.0.0.1", free_port())])
    assert AsyncDirectLane.for_client(sentinel.master_for("mymaster")) is None
