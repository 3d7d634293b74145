"""Where this package reaches below redis-py's public client API, and nowhere else.

Measured gains, each with its fallback to redis-py's own path:

- **Direct lanes** (``DirectLane``, ``AsyncDirectLane``): commands sent down connections the lane
  keeps itself. redis-py 8's ``execute_command`` spends about as long in Python per command as a
  round trip to a local Redis takes (observability counters on every checkout and release, an
  event dispatched per release, pool locking): measured, ~60 µs of a 115 µs ``PING``. A lane
  keeps the connections it borrowed from the client's pool in a free list of its own, so a
  command is one check, one pack, one send and one read. What redis-py guarantees is kept: a
  connection the server closed while idle is reconnected before use (the pool's own check),
  periodic health checks, and fork safety (a child process drops its parent's connections). A
  connection that fails in any way but a complete error reply is disconnected and handed back to
  the pool, never reused half-read. The connection's retry policy applies, as on redis-py's own
  path: a command whose reply was lost may be sent again, which every script allows (an enqueue,
  a finish or a requeue sent twice recognises its own first send; see the Lua files).
- **hiredis packing for asyncio connections** (``pack_with_hiredis``): redis-py's asyncio
  connections pack every command in pure Python; with hiredis installed, the packer its sync
  connections use is used instead.

Both rely on redis-py's connection internals, so they are used only on the redis-py versions
they were checked against (``CHECKED``; the contract tests in tests/test_shims.py fail loudly
if a checked version changes shape), and only where the backend's ``direct_lanes`` option is on.
Only a plain ``redis.Redis`` on a plain ``ConnectionPool`` (and its asyncio twin) gets a lane;
Sentinel and Cluster clients, and clients with client-side caching, keep redis-py's own path.
"""

from __future__ import annotations

import os
import select
from collections import deque
from typing import Any

import redis
import redis.asyncio
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as hiredis_pack

# redis-py releases (major, minor) whose connection internals the lanes were checked against.
CHECKED = ((8, 1),)


def redis_py_version() -> tuple[int, int]:
    major, minor, *_ = (int(part) for part in redis.__version__.split(".")[:2])
    return major, minor


def checked() -> bool:
    """Whether the installed redis-py is one the lanes were checked against."""
    return redis_py_version() in CHECKED


def _packed(conn: Any, hiredis: bool, commands: list[tuple[Any, ...]]) -> list[bytes]:
    """``commands`` packed for one write: by hiredis at once where it may, else (or for an
    argument hiredis refuses: a bytearray, a memoryview, a bad type) by the connection's own
    packer, which raises redis-py's DataError for what cannot be sent."""
    if hiredis:
        try:
            return [b"".join([hiredis_pack(command) for command in commands])]
        except TypeError:
            pass
    return list(conn.pack_commands(commands))


def _packs_with_hiredis(pool: Any) -> bool:
    """Whether hiredis may pack for this pool's connections: it encodes text as UTF-8, as
    redis-py's sync connections have it do, less redis-py's pass over each argument."""
    encoding = str(pool.connection_kwargs.get("encoding", "utf-8"))
    return HIREDIS_AVAILABLE and encoding.replace("-", "").lower() == "utf8"


class DirectLane:
    def __init__(self, client: redis.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._idle: deque[Any] = deque()
        self._pid = os.getpid()
        self.hiredis = _packs_with_hiredis(self._pool)

    @staticmethod
    def for_client(client: Any) -> DirectLane | None:
        """A lane for ``client`` if it is a plain single-server client, else None."""
        pool = getattr(client, "connection_pool", None)
        if (
            not checked()
            or type(client) is not redis.Redis
            or type(pool) is not redis.ConnectionPool
        ):
            return None
        if getattr(pool, "cache", None) is not None or client.connection is not None:
            return None
        return DirectLane(client)

    @property
    def idle(self) -> int:
        """Connections kept between commands."""
        return len(self._idle)

    def _borrow(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle.clear()
            self._pid = os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            return self._pool.get_connection()
        # As the pool checks before lending one: anything to read on an idle connection means
        # the server closed it (restarted, idle timeout) or a reply was left behind.
        try:
            stale = conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()  # the next send reconnects
        return conn

    def __call__(self, *args: Any) -> Any:
        """Send one command and return its raw reply (no response callback applied)."""
        conn = self._borrow()
        try:
            packed = _packed(conn, self.hiredis, [args])
        except BaseException:
            self._idle.append(conn)  # nothing was sent
            raise

        def round_trip() -> Any:
            conn.send_packed_command(packed)
            return conn.read_response()

        try:
            reply = conn.retry.call_with_retry(round_trip, lambda _error: conn.disconnect())
        except redis.ResponseError:
            self._idle.append(conn)  # a whole error reply was read: the connection is clean
            raise
        except BaseException:
            conn.disconnect()
            self._pool.release(conn)
            raise
        self._idle.append(conn)
        return reply


def _socket_readable(conn: Any) -> bool:
    """Whether an idle asyncio connection's socket has bytes (or its end) the loop has not read
    yet: its reader learns of a close only once the loop has polled the socket. Not for TLS,
    where a server may send records (session tickets) that are not replies."""
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    readable, _, _ = select.select([sock.fileno()], [], [], 0)
    return bool(readable)


class AsyncDirectLane:
    """The asyncio twin: a pipeline of commands packed at once, sent in one write, its replies
    read in order, on a connection kept in a free list of its own. Error replies come back in the
    list, as ``raise_on_error=False`` gives them; a connection that fails or is cancelled halfway
    is disconnected and handed back to the pool."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._idle: deque[Any] = deque()
        self._hiredis = _packs_with_hiredis(self._pool)

    @staticmethod
    def for_client(client: Any) -> AsyncDirectLane | None:
        """A lane for ``client`` if it is a plain single-server asyncio client, else None."""
        pool = getattr(client, "connection_pool", None)
        if (
            not checked()
            or type(client) is not redis.asyncio.Redis
            or type(pool) is not redis.asyncio.ConnectionPool
        ):
            return None
        if client.single_connection_client:
            return None
        return AsyncDirectLane(client)

    async def _borrow(self) -> Any:
        try:
            conn = self._idle.pop()
        except IndexError:
            return await self._pool.get_connection()
        try:  # as the pool checks before lending one (see DirectLane._borrow)
            stale = await conn.can_read() or _socket_readable(conn)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            await conn.disconnect()  # the send reconnects
        return conn

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each command's raw reply, or the ResponseError it got, in order."""
        conn = await self._borrow()
        try:
            packed = _packed(conn, self._hiredis, commands)
        except BaseException:
            self._idle.append(conn)  # nothing was sent
            raise
        replies: list[Any] = []
        try:
            await conn.send_packed_command(packed)
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except redis.ResponseError as exc:  # read whole: the next reply follows
                    replies.append(exc)
        except BaseException:
            await conn.disconnect()
            await self._pool.release(conn)
            raise
        self._idle.append(conn)
        return replies


_packed_classes: dict[type, type] = {}


def pack_with_hiredis(client: Any) -> Any:
    """``client`` (asyncio) with its connections packing commands by hiredis, as redis-py's sync
    connections already do; as it is where hiredis is missing or redis-py was not checked.
    Cluster clients keep their own pools."""
    pool = getattr(client, "connection_pool", None)
    if not HIREDIS_AVAILABLE or not checked() or pool is None:
        return client
    from redis.connection import HiredisRespSerializer

    base = pool.connection_class
    if base not in _packed_classes:
        serializer = HiredisRespSerializer()

        def pack_command(self: Any, *args: Any) -> list[bytes]:
            return serializer.pack(*args)  # type: ignore[no-any-return]

        _packed_classes[base] = type(
            f"HiredisPacked{base.__name__}", (base,), {"pack_command": pack_command}
        )
    pool.connection_class = _packed_classes[base]
    return client
