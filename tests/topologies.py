"""Throwaway Redis Clusters and Sentinel groups for tests, on free ports in temp dirs.

Built from ``RedisServer`` (the suite's private servers), so they run on redis-server or Valkey
alike. The cluster is formed with CLUSTER ADDSLOTSRANGE and CLUSTER MEET, what
``redis-cli --cluster create ... --cluster-replicas 0`` sends, without needing a cli binary.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from redis_tasks.keys import prefix_for
from tests.redis_server import RedisServer, free_port

SLOTS = 16384
DEADLINE = 20.0


def _wait(condition: Any, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


class LocalCluster:
    """``masters`` cluster-enabled servers, each owning an equal range of slots."""

    def __init__(self, masters: int = 3) -> None:
        # The bus port is our own free port, not port + 10000 (which may be taken or > 65535).
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            RedisServer(
                None,
                None,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for bus in self.bus_ports
        ]
        step = SLOTS // masters
        self.ranges = [
            (i * step, SLOTS - 1 if i == masters - 1 else (i + 1) * step - 1)
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(port=n.port) for n in self.nodes]
            for client, (first, last) in zip(clients, self.ranges, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
            _wait(lambda: all(self._ready(c) for c in clients), "cluster_state:ok")
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER", "INFO").decode()
        known = len(client.execute_command("CLUSTER", "SLOTS"))
        return "cluster_state:ok" in info and known == len(self.nodes)

    def node_of(self, namespace: str) -> int:
        """The index of the master holding a backend instance's slot, by our slot ranges."""
        slot = key_slot(prefix_for(namespace).encode())
        return next(i for i, (a, b) in enumerate(self.ranges) if a <= slot <= b)

    def namespace_per_node(self) -> list[str]:
        """One namespace whose keys live on each master, in node order."""
        found: dict[int, str] = {}
        i = 0
        while len(found) < len(self.nodes):
            found.setdefault(self.node_of(f"shard{i}"), f"shard{i}")
            i += 1
        return [found[n] for n in range(len(self.nodes))]

    def flushall(self) -> None:
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelGroup:
    """A master, ``replicas`` replicas and three sentinels watching ``service``, tuned to
    fail over within about a second of the master's death. With ``password`` the master and
    replicas require it (``requirepass``/``masterauth``) and the sentinels ``sentinel_password``.
    """

    def __init__(
        self, replicas: int = 1, service: str = "mymaster", *master_args: str,
        binary: str | None = None, password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:  # fmt: skip
        self.service = service
        self.binary = binary
        self.password = password
        self.sentinel_password = sentinel_password
        # Replicas sync at once, not after the default 5 s wait for more of them.
        master_args = ("--repl-diskless-sync-delay", "0", *master_args)
        if password:
            master_args += ("--requirepass", password, "--masterauth", password)
        self.master = RedisServer(None, binary, *master_args)
        self.replicas = [
            RedisServer(
                None, binary, "--replicaof", "127.0.0.1", str(self.master.port), *master_args
            )
            for _ in range(replicas)
        ]
        self.sentinels: list[RedisServer] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def start(self) -> SentinelGroup:
        try:
            self.master.start()
            for replica in self.replicas:
                replica.start()
            with redis.Redis(port=self.master.port, password=self.password) as client:
                _wait(lambda: self._replicas_online(client), "replicas online")
                _wait(lambda: self._replicas_acknowledge(client), "replicas acknowledging")
            ids = [secrets.token_hex(20) for _ in range(3)]
            extra = ("--requirepass", self.sentinel_password) if self.sentinel_password else ()
            self.sentinels = [RedisServer(None, self.binary, "--sentinel", *extra) for _ in ids]
            for sentinel, myid in zip(self.sentinels, ids, strict=True):
                self._configure(sentinel, myid, ids)
                sentinel.start()
            _wait(self._sentinels_agree, "sentinels seeing each other and the replicas")
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_online(self, client: redis.Redis) -> bool:
        info = client.info("replication")
        return int(info.get("connected_slaves", 0)) == len(self.replicas) and all(
            info[f"slave{i}"]["state"] == "online" for i in range(len(self.replicas))
        )

    def _replicas_acknowledge(self, client: redis.Redis) -> bool:
        """Whether every replica confirms a write at once. A replica the master reports
        online may still be loading its first copy (slow on a busy disk), and a WAIT sent
        meanwhile times out: the group is ready only once a write is acknowledged."""
        if not self.replicas:
            return True
        client.set("redis-tasks-test:replicated", secrets.token_hex(4))
        return int(client.wait(len(self.replicas), 200)) == len(self.replicas)

    def _configure(self, sentinel: RedisServer, myid: str, ids: list[str]) -> None:
        """Write a sentinel's config file (a sentinel needs a writable one). Each is told the
        others and the replicas up front, which it would otherwise learn from hello messages
        every 2 s and INFO every 10 s."""
        sentinel.dir = tempfile.mkdtemp(prefix="redis-tasks-")
        s = self.service
        lines = [
            f"sentinel myid {myid}",
            f"sentinel monitor {s} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {s} 500",
            f"sentinel failover-timeout {s} 2000",
            f"sentinel parallel-syncs {s} 1",
            *([f"sentinel auth-pass {s} {self.password}"] if self.password else []),
            *(
                [f"sentinel sentinel-pass {self.sentinel_password}"]
                if self.sentinel_password
                else []
            ),
            *(f"sentinel known-replica {s} 127.0.0.1 {r.port}" for r in self.replicas),
            *(
                f"sentinel known-sentinel {s} 127.0.0.1 {other.port} {other_id}"
                for other, other_id in zip(self.sentinels, ids, strict=True)
                if other_id != myid
            ),
        ]
        conf = Path(sentinel.dir) / "sentinel.conf"
        conf.write_text("\n".join(lines) + "\n")
        sentinel.config = str(conf)

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, password=self.sentinel_password) as client:
                state = client.sentinel_master(self.service)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < len(self.replicas):
                    return False
        return True

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinels[0].port, password=self.sentinel_password) as client:
            _, port = client.sentinel_get_master_addr_by_name(self.service)
            return int(port)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def cluster_backends(url: str, namespaces: list[str], **options: Any) -> dict[str, Any]:
    """TASKS entries ``shard0``, ``shard1``, ... : one backend instance per namespace."""
    return {
        f"shard{i}": {
            "BACKEND": "redis_tasks.backend.RedisBackend",
            "LOCATION": url,
            "cluster": True,
            "queue_name": namespace,
            **options,
        }
        for i, namespace in enumerate(namespaces)
    }
