"""Commands sent straight down a connection the lane keeps, for the hot sync paths: the enqueue
script and ``get_result``'s read.

redis-py 8's ``Redis.execute_command`` spends about as long in Python per command as a round
trip to a local Redis takes (observability counters recorded on every checkout and release,
an event dispatched per release, pool locking): measured here, ~60 µs of a 115 µs ``PING``. A
lane keeps the connections it borrowed from the client's pool in a free list of its own, so a
command is one check, one pack, one send and one read. What redis-py guarantees is kept: a
connection the server closed while idle is reconnected before use (the pool's own check), the
connection's retry policy, periodic health checks, and fork safety (a child process drops its
parent's connections). A connection that fails in any way but a complete error reply is disconnected
and handed back to the pool, never reused half-read.

Only a plain ``redis.Redis`` on a plain ``ConnectionPool`` gets a lane (and its asyncio twin,
for the worker's pipelines of claims and finishes); Sentinel and Cluster clients, and clients
with client-side caching, keep redis-py's own path.
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


class CommandHead:
    """The arguments a command sent over and over always starts with, packed once.

    The enqueue script's call starts with the same dozen arguments every time (its name, its
    keys, the backend's settings); hiredis writes each argument's length with ``sprintf``, and
    packing them took about a tenth of a ``noop.enqueue()``'s client instructions. Only the
    rest of the call is packed per call (``DirectLane.__call__(*rest, head=...)``)."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self._body = _without_header(hiredis_pack(args)) if HIREDIS_AVAILABLE else b""

    def packed(self, rest: tuple[Any, ...]) -> bytes:
        """The whole command, packed as hiredis packs it (raises TypeError as it does, and
        without hiredis: the caller packs it its own way then)."""
        if not HIREDIS_AVAILABLE:
            raise TypeError("hiredis is not installed")
        tail = _without_header(hiredis_pack(rest))
        return b"*%d\r\n%b%b" % (len(self.args) + len(rest), self._body, tail)


def _without_header(packed: bytes) -> bytes:
    """A packed command less its leading ``*<count>\\r\\n``."""
    return packed[packed.index(b"\r\n") + 2 :]


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
        self._hiredis = _packs_with_hiredis(self._pool)

    @staticmethod
    def for_client(client: Any) -> DirectLane | None:
        """A lane for ``client`` if it is a plain single-server client, else None."""
        pool = getattr(client, "connection_pool", None)
        if type(client) is not redis.Redis or type(pool) is not redis.ConnectionPool:
            return None
        if getattr(pool, "cache", None) is not None or client.connection is not None:
            return None
        return DirectLane(client)

    def _borrow(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle.clear()
            self._pid = os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            pass
        else:
            # As the pool checks before lending one: anything to read on an idle connection
            # means the server closed it (restarted, idle timeout) or a reply was left behind.
            try:
                stale = conn.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                conn.disconnect()  # the next send reconnects
            return conn
        try:
            return self._pool.get_connection()
        except TypeError:  # redis-py before 5.3 asks for a command name
            return self._pool.get_connection("_")

    def __call__(self, *args: Any, head: CommandHead | None = None) -> Any:
        """Send one command (``head``'s arguments first, if given) and return its raw reply
        (no response callback applied)."""
        conn = self._borrow()
        try:
            packed = self._pack(conn, args, head)
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

    def _pack(self, conn: Any, args: tuple[Any, ...], head: CommandHead | None) -> list[bytes]:
        if head is None:
            return _packed(conn, self._hiredis, [args])
        if self._hiredis and args:
            try:
                return [head.packed(args)]
            except TypeError:  # an argument hiredis refuses: the connection's packer says why
                pass
        return _packed(conn, False, [head.args + args])

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        reply = self("HGETALL", key)
        if isinstance(reply, dict):  # RESP3
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))


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
    """The asyncio twin, for the worker's batched writes (batching.py): a pipeline of commands
    packed at once, sent in one write, its replies read in order, on a connection kept in a free
    list of its own. Error replies come back in the list, as ``raise_on_error=False`` gives them;
    a connection that fails or is cancelled halfway is disconnected and handed back to the pool."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._idle: deque[Any] = deque()
        self._hiredis = _packs_with_hiredis(self._pool)

    @staticmethod
    def for_client(client: Any) -> AsyncDirectLane | None:
        """A lane for ``client`` if it is a plain single-server asyncio client, else None."""
        pool = getattr(client, "connection_pool", None)
        if (
            type(client) is not redis.asyncio.Redis
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
            try:
                return await self._pool.get_connection()
            except TypeError:  # redis-py before 5.3 asks for a command name
                return await self._pool.get_connection("_")
        try:  # as the pool checks before lending one (see DirectLane._borrow)
            # can_read since redis-py 8 (can_read_destructive, its older name, now warns)
            check = getattr(conn, "can_read", None) or conn.can_read_destructive
            stale = await check() or _socket_readable(conn)
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
