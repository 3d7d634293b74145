"""Redis clients of one backend: a thread-safe sync client and one asyncio client per event loop.

asyncio clients are bound to the loop that created them, so each loop (a worker's, an ASGI
server's) gets its own; those of closed loops are dropped when a new loop asks for one.

Three kinds of deployment, chosen by options and following redis-py's and django-redis's
conventions (docs/deployment.md):

- a single Redis: ``LOCATION`` is its URL;
- Redis Cluster (``"cluster": True``): ``LOCATION`` is the URL of any node; redis-py's
  ``RedisCluster`` finds the others and routes each command to the shard of its keys. All keys
  of a backend instance share one hash tag, so they live on one shard (see keys.py);
- Sentinel (``"sentinels": [(host, port), ...]``): ``LOCATION`` is
  ``redis://[[user]:password@]<service name>/<db>``; every new connection asks the sentinels
  where the master is, so clients follow a failover by themselves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from .batching import ScriptBatcher
from .sender import AsyncClient, AsyncSender, SyncClient, SyncSender
from .shims.redis_py import AsyncDirectLane, DirectLane, pack_with_hiredis

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


@dataclass(frozen=True)
class Topology:
    """Where Redis is: a plain URL, a cluster behind any node's URL, or a Sentinel service."""

    url: str
    cluster: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "single"


def sentinel_service(url: str) -> tuple[str, dict[str, Any]]:
    """The service name and master connection arguments of a Sentinel ``LOCATION``:
    ``redis://[[user]:password@]<service>/<db>`` (``rediss://`` for TLS to the master)."""
    parts = urlsplit(url)
    service = parts.netloc.rpartition("@")[2]  # as written: master names are case-sensitive
    kwargs: dict[str, Any] = {"db": int(parts.path.strip("/") or 0)}
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password is not None:
        kwargs["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        kwargs["ssl"] = True
    return unquote(service), kwargs


class Connections:
    """The clients of one backend instance, and a sender of scripts for each (sender.py)."""

    def __init__(
        self, topology: Topology | str, options: dict[str, Any], direct_lanes: bool = True
    ) -> None:
        self.topology = topology if isinstance(topology, Topology) else Topology(topology)
        self.url = self.topology.url
        self.options = {**DEFAULT_CONNECTION_OPTIONS, **options}
        self.direct_lanes = direct_lanes
        self._sync: tuple[SyncClient, SyncSender] | None = None
        self._lock = threading.Lock()
        self._async: dict[
            asyncio.AbstractEventLoop, tuple[AsyncClient, AsyncSender, ScriptBatcher]
        ] = {}
        self._async_sentinels: dict[asyncio.AbstractEventLoop, Any] = {}

    @property
    def sync(self) -> SyncClient:
        return self.sender.client

    @property
    def sender(self) -> SyncSender:
        """The sync client's script sender, down its direct lane where it has one."""
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    client = self.new_sync()
                    lane = DirectLane.for_client(client) if self.direct_lanes else None
                    self._sync = (client, SyncSender(client, lane))
        return self._sync[1]

    @property
    def sync_created(self) -> bool:
        """Whether the sync client was made yet (the checks and asyncio callers never make it)."""
        return self._sync is not None

    @property
    def event_loops(self) -> int:
        """Event loops with a client of their own now."""
        return len(self._async)

    def read(self, key: str) -> dict[bytes, bytes]:
        """A hash, down the sync client's direct lane where it has one."""
        sender = self.sender
        if sender.lane is None:
            return cast(dict[bytes, bytes], sender.client.hgetall(key))
        reply = sender.lane("HGETALL", key)
        if isinstance(reply, dict):  # RESP3
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    @property
    def aio(self) -> AsyncClient:
        return self._of_loop()[0]

    @property
    def asender(self) -> AsyncSender:
        """The script sender of this event loop's client."""
        return self._of_loop()[1]

    @property
    def batcher(self) -> ScriptBatcher:
        """This event loop's group commit of script calls (batching.py)."""
        return self._of_loop()[2]

    def _of_loop(self) -> tuple[AsyncClient, AsyncSender, ScriptBatcher]:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            # Forget the clients of loops that are gone (asyncio.run, async_to_sync calls).
            for gone in [other for other in self._async if other.is_closed()]:
                del self._async[gone]
                self._async_sentinels.pop(gone, None)
            client = self._new_async(loop)
            lane = AsyncDirectLane.for_client(client) if self.direct_lanes else None
            sender = AsyncSender(client, lane)
            found = self._async[loop] = (client, sender, ScriptBatcher(sender))
        return found

    def new_sync(self, **overrides: Any) -> SyncClient:
        """A client with its own pool, for a thread that must not wait behind others."""
        options = {**self.options, **overrides}
        t = self.topology
        if t.kind == "cluster":
            return redis.RedisCluster.from_url(t.url, **options)
        if t.kind == "sentinel":
            service, master = sentinel_service(t.url)
            manager: Any = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
                list(t.sentinels), sentinel_kwargs=self._sentinel_kwargs(options), **options
            )
            return cast(redis.Redis, manager.master_for(service, **master))
        return redis.Redis.from_url(t.url, **options)

    def _new_async(self, loop: asyncio.AbstractEventLoop) -> AsyncClient:
        t = self.topology
        if t.kind == "cluster":
            return redis.asyncio.RedisCluster.from_url(t.url, **self.options)
        if t.kind == "sentinel":
            service, master = sentinel_service(t.url)
            manager: Any = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
                list(t.sentinels), sentinel_kwargs=self._sentinel_kwargs(self.options),
                **self.options,
            )  # fmt: skip
            self._async_sentinels[loop] = manager
            return cast(redis.asyncio.Redis, self._packed(manager.master_for(service, **master)))
        return cast(
            redis.asyncio.Redis, self._packed(redis.asyncio.Redis.from_url(t.url, **self.options))
        )

    def _packed(self, client: Any) -> Any:
        return pack_with_hiredis(client) if self.direct_lanes else client

    def _sentinel_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """Connection arguments for the sentinels themselves: the timeouts of the master
        connections (so a dead sentinel costs no more than a dead master), and what the
        ``sentinel_kwargs`` option adds (a sentinel password, TLS)."""
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        return {**timeouts, **self.topology.sentinel_kwargs}

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        found = self._async.pop(loop, None)
        if found is not None:
            await found[0].aclose()
        manager = self._async_sentinels.pop(loop, None)
        if manager is not None:
            if hasattr(manager, "aclose"):
                await manager.aclose()
            else:  # redis-py before 5.1: close its sentinels' clients one by one
                for sentinel in manager.sentinels:
                    await sentinel.aclose()


def sentinel_addresses(value: Any) -> Sequence[tuple[str, int]] | None:
    """``value`` as (host, port) pairs, or None if it is not a non-empty list of them."""
    if not isinstance(value, list | tuple) or not value:
        return None
    pairs = []
    for item in value:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not item[0]
            or type(item[1]) is not int
            or not 0 < item[1] < 65536
        ):
            return None
        pairs.append((item[0], item[1]))
    return pairs
