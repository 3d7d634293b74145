"""Many hosts: workers on separate network hosts share one Redis, and one host is cut off.

Each host is a Linux network namespace with a host name of its own (``unshare --uts``), joined to
a namespace that runs a private redis-server through veth pairs on one bridge; this process
reaches Redis through one more veth pair. Cutting a host's bridge port is a real partition: its
packets go nowhere, and its worker sees only silence and timeouts.

What is checked, against a journal the tasks write themselves (``start``/``end`` with host and
pid), not against Redis: the cut-off host's tasks in flight are recovered by the other hosts once
their leases expire; every task has exactly one stored outcome, written by the attempt that
owned it; nothing is lost; when the link returns the cut-off worker's finishes are rejected, and
it goes on working. Worker ids and the worker registry name each host.

Needs root and ``ip`` (iproute2) and ``unshare`` (util-linux): CI runs as root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus
from redis_tasks.ops import Inspector
from tests import tasks
from tests.helpers import ROOT, child_env, ran_under, stop_processes, wait_until
from tests.redis_server import server_binary

LEASE = "3"  # long enough that a loaded machine never loses a healthy worker's lease
HOSTS = 3
CONCURRENCY = 2
REDIS_PORT = 6379  # the Redis host is a namespace of its own: no other server can be there


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def require_namespaces() -> None:
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(
            "The many-hosts test builds network namespaces: run it as root, with `ip` "
            "(apt-get install iproute2) and `unshare` (apt-get install util-linux)"
            + (f"; missing: {', '.join(missing)}" if missing else "; not running as root")
        )


def unused_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no route of this machine touches."""
    routes = json.loads(run("ip", "-4", "-j", "route", "show", "table", "all"))
    taken = [
        ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst") != "default"
    ]
    for _ in range(100):
        subnet = ipaddress.ip_network(
            f"10.{random.randrange(100, 200)}.{random.randrange(256)}.0/24"
        )
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


class Network:
    """A Redis host and worker hosts, each a network namespace, on one bridge."""

    def __init__(self, hosts: int, tmp_path: Path) -> None:
        tag = secrets.token_hex(3)  # unique names: runs in parallel never collide
        self.tmp_path = tmp_path
        self.redis_ns = f"redis-tasks-{tag}-redis"
        self.host_ns = [f"redis-tasks-{tag}-host{i}" for i in range(hosts)]
        self.hostnames = [f"host{i}-{tag}" for i in range(hosts)]
        self.local_link = f"rt{tag}"  # the one interface in this process's namespace
        self.made: list[str] = []
        self.redis: subprocess.Popen[bytes] | None = None
        subnet = unused_subnet()
        self.addresses = [str(a) for a in subnet.hosts()]
        self.prefix = subnet.prefixlen
        self.redis_ip = self.addresses[0]

    def build(self) -> None:
        r = self.redis_ns
        for ns in (r, *self.host_ns):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", r, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", r, "addr", "add", f"{self.redis_ip}/{self.prefix}", "dev", "br0")
        run("ip", "-n", r, "link", "set", "br0", "up")
        for i, ns in enumerate(self.host_ns):
            run("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
                "peer", "name", f"port{i}", "netns", r)  # fmt: skip
            run("ip", "-n", ns, "addr", "add", f"{self.addresses[10 + i]}/{self.prefix}",
                "dev", "eth0")  # fmt: skip
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", r, "link", "set", f"port{i}", "master", "br0", "up")
        run("ip", "link", "add", self.local_link, "type", "veth",
            "peer", "name", "local", "netns", r)  # fmt: skip
        run("ip", "addr", "add", f"{self.addresses[-1]}/{self.prefix}", "dev", self.local_link)
        run("ip", "link", "set", self.local_link, "up")
        run("ip", "-n", r, "link", "set", "local", "master", "br0", "up")

    def start_redis(self) -> None:
        directory = self.tmp_path / "redis"
        directory.mkdir()
        self.redis = subprocess.Popen(
            ["ip", "netns", "exec", self.redis_ns, server_binary(), "--port", str(REDIS_PORT),
             "--bind", self.redis_ip, "--protected-mode", "no", "--dir", str(directory),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis(self.redis_ip, REDIS_PORT, socket_connect_timeout=0.5)

        def answers() -> bool:
            assert self.redis is not None and self.redis.poll() is None, "redis-server exited"
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, timeout=15, every=0.05)
        finally:
            client.close()

    def on_host(self, i: int, argv: list[str]) -> list[str]:
        """argv run on host ``i``: in its network namespace, under its own host name. Every
        step execs the next, so the process started is the one that runs ``argv``."""
        return ["ip", "netns", "exec", self.host_ns[i], "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostnames[i], *argv]  # fmt: skip

    def cut(self, i: int) -> None:
        """Pull host ``i``'s cable: its bridge port goes down, its packets go nowhere."""
        run("ip", "-n", self.redis_ns, "link", "set", f"port{i}", "down")

    def heal(self, i: int) -> None:
        run("ip", "-n", self.redis_ns, "link", "set", f"port{i}", "up")

    def tear_down(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(10)
        for ns in self.made:  # deleting a namespace deletes the veth ends in it, and their peers
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.local_link], capture_output=True)


class HostJournal:
    """What the tasks wrote: ``start|end <key> <host> <pid>`` lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str, str, int]]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            kind, key, host, pid = line.split()
            found.append((kind, key, host, int(pid)))
        return found

    def by(self, kind: str, key: str) -> list[tuple[str, int]]:
        return [(host, pid) for k, name, host, pid in self.lines() if k == kind and name == key]

    def keys(self, kind: str, host: str) -> set[str]:
        return {name for k, name, h, _ in self.lines() if k == kind and h == host}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    require_namespaces()
    net = Network(HOSTS, tmp_path)
    try:
        net.build()
        net.start_redis()
        yield net
    finally:
        net.tear_down()


@pytest.fixture
def hosts(network: Network, tmp_path: Path) -> Iterator[Any]:
    """Start a worker on host i: ``hosts(i, *args)``; its output goes to worker-<i>.log."""
    env = child_env(
        REDIS_TASKS_TEST_HOST=network.redis_ip,
        REDIS_TASKS_TEST_PORT=str(REDIS_PORT),
        REDIS_TASKS_TEST_LEASE=LEASE,
    )
    procs: list[subprocess.Popen[str]] = []

    def start(i: int, *args: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"worker-{i}.log", "w")  # noqa: SIM115
        argv = [sys.executable, "-m", "django", "redis_tasks_worker", "--backend", "default", *args]
        proc = subprocess.Popen(
            network.on_host(i, argv), cwd=ROOT, env=env, text=True, stdout=log, stderr=log
        )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        stop_processes(procs)


def test_a_host_cut_off_mid_run_loses_nothing_and_its_stale_finishes_are_rejected(
    network: Network, hosts: Any, tmp_path: Path
) -> None:
    backend = RedisBackend(
        "default", {"BACKEND": "x", "LOCATION": f"redis://{network.redis_ip}:{REDIS_PORT}/12",
                    "queue_name": "task_queue", "lease_timeout": float(LEASE)},
    )  # fmt: skip
    inspector = Inspector(backend)
    journal = HostJournal(tmp_path / "journal")
    hold = tmp_path / "hold"
    hold.mkdir()
    names = network.hostnames
    victim = names[0]
    for name in names:  # every host's first tasks wait, so that each host has tasks in flight
        (hold / name).touch()

    # Host 0 also serves a queue of its own: after the cut, work that only it can do.
    procs = [hosts(0, "--concurrency", str(CONCURRENCY), "--grace", "1",
                   "--queue", "default", "--queue", "solo")]  # fmt: skip
    procs += [hosts(i, "--concurrency", str(CONCURRENCY), "--grace", "1", "--queue", "default")
              for i in range(1, HOSTS)]  # fmt: skip

    def live() -> dict[str, Any]:
        return {w.host: w for w in inspector.workers()}

    registered = wait_until(lambda: len(found := live()) == HOSTS and found, timeout=30)
    for name, proc in zip(names, procs, strict=True):  # worker ids name the host
        assert registered[name].pid == proc.pid
        assert registered[name].id.startswith(f"{name}:{proc.pid}:")

    results = {
        f"t{i}": backend.enqueue(tasks.host_journal, [str(journal.path), f"t{i}", str(hold), 0.1],
                                 {})
        for i in range(24)
    }  # fmt: skip
    wait_until(lambda: all(len(journal.keys("start", n)) == CONCURRENCY for n in names), 30)
    held = journal.keys("start", victim)  # the victim's tasks in flight
    for name in names[1:]:
        (hold / name).unlink()
    network.cut(0)

    # The other hosts recover the victim's tasks once its leases expire, and finish everything.
    wait_until(lambda: live().keys() == set(names[1:]), timeout=30)  # the victim's entry expired
    wait_until(
        lambda: all(backend.get_result(r.id).is_finished for r in results.values()), timeout=40
    )
    stored = {key: backend.get_result(r.id) for key, r in results.items()}
    assert procs[0].poll() is None

    # The link returns; the victim finds out that it lost its leases, then its tasks end and their
    # outcomes are refused: the rescuers' stand.
    network.heal(0)
    wait_until(lambda: victim in live(), timeout=30)
    log = tmp_path / "worker-0.log"
    ids = [results[key].id for key in held]
    wait_until(lambda: all(f"lost the lease of task {i}" in log.read_text() for i in ids), 30)
    (hold / victim).unlink()
    wait_until(lambda: journal.keys("end", victim) >= held, timeout=30)
    wait_until(lambda: all(f"Task {i}: outcome discarded" in log.read_text() for i in ids), 30)

    starts_and_ends = [(journal.by("start", k), journal.by("end", k)) for k in results]
    assert all(starts and ends for starts, ends in starts_and_ends), "a task never ran"
    for key, result in results.items():
        final = backend.get_result(result.id)
        assert final.status == TaskResultStatus.SUCCESSFUL, (key, final.errors)
        # One stored outcome: nothing the victim did after the cut changed it.
        assert (final.finished_at, final.worker_ids, final.return_value) == (
            stored[key].finished_at, stored[key].worker_ids, stored[key].return_value
        )  # fmt: skip
        starts = journal.by("start", key)
        assert final.attempts == len(starts), (key, final.worker_ids, starts)
        # Every attempt is recorded under the worker id of the host and process that made it.
        # (An attempt after a lost one runs in a child process of its worker.)
        assert [w.split(":")[:2] for w in final.worker_ids] == [
            [h, str(ran_under(p))] for h, p in starts
        ]
        last_host = final.worker_ids[-1].split(":")[0]
        assert final.return_value == f"{key}@{last_host}"
        if key in held:  # recovered by another host; the victim's attempt is the lost one
            assert starts[0] == (victim, procs[0].pid) and last_host != victim
            assert [e.exception_class_path for e in final.errors] == [
                "redis_tasks.exceptions.WorkerLost"
            ]
            assert sorted(journal.by("end", key)) == sorted(starts)  # both ran to the end
        else:
            assert final.attempts == 1 and final.errors == []
    assert len(held) == CONCURRENCY

    # The victim goes on working normally: a queue only it serves.
    after = [
        backend.enqueue(tasks.host_journal.using(queue_name="solo"),
                        [str(journal.path), f"solo{i}", str(hold)], {})
        for i in range(3)
    ]  # fmt: skip
    wait_until(lambda: all(backend.get_result(r.id).is_finished for r in after), timeout=30)
    for r in after:
        final = backend.get_result(r.id)
        assert final.status == TaskResultStatus.SUCCESSFUL and final.attempts == 1
        assert final.worker_ids[0].startswith(f"{victim}:{procs[0].pid}:")
    assert all(proc.poll() is None for proc in procs), "a worker had to be restarted"

    # Any host can see the whole fleet: the CLI, run on a worker host, lists every host's worker.
    cli = subprocess.run(
        network.on_host(1, [sys.executable, "-m", "django", "redis_tasks", "--json",
                            "--backend", "default", "status"]),
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env=child_env(REDIS_TASKS_TEST_HOST=network.redis_ip,
                      REDIS_TASKS_TEST_PORT=str(REDIS_PORT)),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    (view,) = json.loads(cli.stdout)
    listed = {w["host"]: w for w in view["workers"]}
    assert listed.keys() == set(names)
    for name, proc in zip(names, procs, strict=True):
        assert listed[name]["id"].startswith(f"{name}:{proc.pid}:")
    assert view["totals"] == {"ready": 0, "deferred": 0, "running": 0, "failed": 0,
                              "successful": len(results) + len(after), "dead": 0}  # fmt: skip
