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
from typing import Any, TypeAlias, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from .direct import DirectLane

# Fail fast when Redis is unreachable: an enqueue must raise within a couple of seconds.
DEFAULT_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 30,
}

SyncClient: TypeAlias = "redis.Redis | redis.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"


def _hiredis_packed(base: type) -> type:
    """``base`` with commands packed by hiredis, as redis-py's sync connections already do."""
    serializer = HiredisRespSerializer()

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        return serializer.pack(*args)  # type: ignore[no-any-return]

    return type(f"HiredisPacked{base.__name__}", (base,), {"pack_command": pack_command})


_packed_classes: dict[type, type] = {}


def pack_with_hiredis(client: AsyncClient) -> AsyncClient:
    """redis-py's asyncio connections pack every command in pure Python, which costs a worker
    more than a no-op task's own Python; with hiredis installed, its packer is used instead
    (the same one redis-py's sync connections use). Cluster clients keep their own pools."""
    pool = getattr(client, "connection_pool", None)
    if HIREDIS_AVAILABLE and pool is not None:
        base = pool.connection_class
        if base not in _packed_classes:
            _packed_classes[base] = _hiredis_packed(base)
        pool.connection_class = _packed_classes[base]
    return client


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


def in_cluster(client: Any) -> bool:
    return isinstance(client, redis.RedisCluster | redis.asyncio.RedisCluster)


def on_node_of(client: Any, key: str) -> dict[str, Any]:
    """Keyword arguments sending a keyless command (WAIT, CONFIG, TIME) to the node that holds
    ``key``: on a cluster redis-py would otherwise pick a node at random."""
    if in_cluster(client):
        return {"target_nodes": client.get_node_from_key(key)}
    return {}


class Connections:
    def __init__(self, topology: Topology | str, options: dict[str, Any]) -> None:
        self.topology = topology if isinstance(topology, Topology) else Topology(topology)
        self.url = self.topology.url
        self.options = {**DEFAULT_CONNECTION_OPTIONS, **options}
        self._sync: SyncClient | None = None
        self._direct: DirectLane | None = None
        self._lock = threading.Lock()
        self._async: dict[asyncio.AbstractEventLoop, AsyncClient] = {}
        self._async_sentinels: dict[asyncio.AbstractEventLoop, Any] = {}

    @property
    def sync(self) -> SyncClient:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    client = self.new_sync()
                    self._direct = DirectLane.for_client(client)
                    self._sync = client
        return self._sync

    @property
    def direct(self) -> DirectLane | None:
        """The sync client's lane for hot commands, or None where redis-py's own path serves
        (Sentinel, Cluster; see direct.py)."""
        if self._sync is None:
            self.sync  # noqa: B018 -- creates both
        return self._direct

    @property
    def aio(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            # Forget the clients of loops that are gone (asyncio.run, async_to_sync calls).
            for gone in [other for other in self._async if other.is_closed()]:
                del self._async[gone]
                self._async_sentinels.pop(gone, None)
            client = self._async[loop] = self._new_async(loop)
        return client

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
            return pack_with_hiredis(
                cast(redis.asyncio.Redis, manager.master_for(service, **master))
            )
        return pack_with_hiredis(redis.asyncio.Redis.from_url(t.url, **self.options))

    def _sentinel_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """Connection arguments for the sentinels themselves: the timeouts of the master
        connections (so a dead sentinel costs no more than a dead master), and what the
        ``sentinel_kwargs`` option adds (a sentinel password, TLS)."""
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        return {**timeouts, **self.topology.sentinel_kwargs}

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._async.pop(loop, None)
        if client is not None:
            await client.aclose()
        manager = self._async_sentinels.pop(loop, None)
        if manager is not None:
            await manager.aclose()


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
