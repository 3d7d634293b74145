"""Redis clients of one backend: a thread-safe sync client and one asyncio client per event loop.

asyncio clients are bound to the loop that created them, so each loop (a worker's, an ASGI
server's) gets its own; those of closed loops are dropped when a new loop asks for one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

# Fail fast when Redis is unreachable: an enqueue must raise within a couple of seconds.
DEFAULT_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 30,
}


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Connections:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.options = {**DEFAULT_CONNECTION_OPTIONS, **options}
        self._sync: redis.Redis | None = None
        self._lock = threading.Lock()
        self._async: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}

    @property
    def sync(self) -> redis.Redis:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = redis.Redis.from_url(self.url, **self.options)
        return self._sync

    @property
    def aio(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            # Forget the clients of loops that are gone (asyncio.run, async_to_sync calls).
            for gone in [other for other in self._async if other.is_closed()]:
                del self._async[gone]
            client = redis.asyncio.Redis.from_url(self.url, **self.options)
            self._async[loop] = client
        return client

    def new_sync(self, **overrides: Any) -> redis.Redis:
        """A client with its own pool, for a thread that must not wait behind others."""
        return redis.Redis.from_url(self.url, **{**self.options, **overrides})

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._async.pop(loop, None)
        if client is not None:
            await client.aclose()
