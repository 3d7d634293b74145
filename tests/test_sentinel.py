"""Sentinel: a master, replicas and three sentinels; the master is SIGKILLed while tasks are
enqueued from a thread and run by a worker.

What is checked: enqueuers see errors only in the failover window; the worker carries on with
the new master by itself; every acknowledged enqueue that survived runs. Redis replicates
asynchronously, so without ``wait_replicas`` a failover may lose the enqueues acknowledged in
the last moments before the kill: the test prints exactly which, and bounds them. With
``wait_replicas: 1`` none may be lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from redis_tasks.compat import TaskResultDoesNotExist, TaskResultStatus, task_backends
from redis_tasks.exceptions import BackendUnavailable, DurabilityNotConfirmed
from tests import tasks
from tests.helpers import wait_until
from tests.redis_server import server_binary
from tests.topologies import SentinelGroup

# A failover takes down-after-milliseconds (500) plus an election: a few seconds at most here.
FAILOVER_WINDOW = 10.0
# Redis replicates within a millisecond on an idle machine; on a loaded one a replica was seen
# 0.5 s (330 kB) behind. An enqueue acknowledged longer than this before the kill has surely
# reached the replica. The enqueuer runs for about 2.5 s before the kill, so that the
# acknowledged enqueues older than this bound are many and must all survive.
REPLICATION_LAG_BOUND = 1.5
ENQUEUEING_BEFORE_KILL = 2.5


@dataclass
class Run:
    """What the enqueuer thread saw: acknowledged ids with the time of their ack, and errors."""

    acked: list[tuple[str, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lag: str = ""  # the replicas' state just before the kill

    def enqueue_until_stopped(self, alias: str) -> None:
        add = tasks.add.using(backend=alias)
        backend = task_backends[alias]
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if i % 5:
                    results = [add.enqueue(i, 1)]
                else:  # the bulk path too
                    results = backend.enqueue_many(add, [((i, n), {}) for n in range(3)])
            except (BackendUnavailable, DurabilityNotConfirmed) as exc:
                self.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                self.stop.wait(0.05)
                continue
            now = time.monotonic()
            self.acked += [(r.id, now) for r in results]
            self.stop.wait(0.003)  # about 300 enqueues a second: the machine is shared


def sentinel_backend(group: SentinelGroup, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"redis://{group.service}/0",
        "sentinels": group.addresses,
        "lease_timeout": 2,  # outcomes lost with the old master come back quickly
        **options,
    }


@pytest.fixture
def group(request: Any) -> Iterator[SentinelGroup]:
    found = SentinelGroup(replicas=getattr(request, "param", 1)).start()
    yield found
    found.stop()


def replication_lag(group: SentinelGroup) -> str:
    with redis.Redis(port=group.master.port) as master:
        offset = int(master.info("replication")["master_repl_offset"])
    states = []
    for replica in group.replicas:
        with redis.Redis(port=replica.port) as client:
            info = client.info("replication")
        behind = offset - int(info.get("slave_repl_offset", 0))
        states.append(f"link {info['master_link_status']}, {behind} bytes behind")
    return "; ".join(states)


def fail_over(group: SentinelGroup, alias: str, background: Any) -> tuple[Run, float, list[str]]:
    """Enqueue and run tasks, SIGKILL the master, carry on; return the run, the kill time
    and the acknowledged ids that the new master does not have."""
    backend = task_backends[alias]
    run = Run()
    enqueuer = threading.Thread(target=run.enqueue_until_stopped, args=(alias,))
    background(alias, concurrency=8)
    enqueuer.start()
    try:
        wait_until(
            lambda: run.acked and run.acked[-1][1] - run.acked[0][1] > ENQUEUEING_BEFORE_KILL
        )
        old_port = group.master.port
        assert group.master_port() == old_port, "a failover happened before the kill"
        run.lag = replication_lag(group)
        killed_at = time.monotonic()
        group.master.kill()
        wait_until(lambda: group.master_port() != old_port, timeout=FAILOVER_WINDOW)
        # Enqueues succeed again, and keep succeeding, on the new master.
        wait_until(lambda: run.acked[-1][1] > killed_at, timeout=FAILOVER_WINDOW)
        resumed = len(run.acked)
        wait_until(lambda: len(run.acked) >= resumed + 150)
    finally:
        run.stop.set()
        enqueuer.join()

    lost = []
    for task_id, _ in run.acked:
        try:
            backend.get_result(task_id)
        except TaskResultDoesNotExist:
            lost.append(task_id)
    survivors = [task_id for task_id, _ in run.acked if task_id not in set(lost)]

    def all_ran() -> bool:
        return all(backend.get_result(i).status == TaskResultStatus.SUCCESSFUL for i in survivors)

    # The worker reconnected by itself: everything acknowledged and kept runs.
    wait_until(all_ran, timeout=30, every=0.5)
    # An enqueue caught by the kill either fails (BackendUnavailable) or, when redis-py's own
    # retry reaches the new master in time, succeeds late: both are fine, an error after the
    # failover window is not.
    assert all(killed_at <= at <= killed_at + FAILOVER_WINDOW for at, _ in run.errors), run.errors
    return run, killed_at, lost


def test_failover_without_wait_loses_at_most_the_last_unreplicated_enqueues(
    group: SentinelGroup, settings: Any, background: Any
) -> None:
    settings.TASKS = {**settings.TASKS, "sentinel": sentinel_backend(group)}
    run, killed_at, lost = fail_over(group, "sentinel", background)

    acked_at = dict(run.acked)
    window = [i for i, at in run.acked if killed_at - REPLICATION_LAG_BOUND <= at <= killed_at]
    print(
        f"\nSentinel failover without wait_replicas: {len(run.acked)} enqueues acknowledged, "
        f"{len(run.errors)} refused"
        + (f" within {run.errors[-1][0] - killed_at:.2f}s after the kill, " if run.errors else ", ")
        + f"replica just before the kill: {run.lag}; {len(lost)} acknowledged and lost: "
        + ", ".join(
            f"{i} (acked {1000 * (killed_at - at):.1f} ms before the kill)"
            for i, at in acked_at.items()
            if i in set(lost)
        )
    )
    # Only what was acknowledged just before the kill can be lost: Redis had not sent it yet.
    older = [i for i, at in run.acked if at < killed_at - REPLICATION_LAG_BOUND]
    assert len(older) >= 100  # so that the bound below says something
    assert set(lost) <= set(window)


@pytest.mark.parametrize("group", [2], indirect=True)
def test_failover_with_wait_replicas_loses_no_acknowledged_enqueue(
    group: SentinelGroup, settings: Any, background: Any
) -> None:
    # Two replicas: after the failover one is left to confirm the new master's writes. The
    # wait is generous: on a loaded machine a replica was seen 0.5 s behind, and a wait that
    # times out before the kill is an error outside the failover window.
    entry = sentinel_backend(group, wait_replicas=1, wait_timeout=2.0)
    settings.TASKS = {**settings.TASKS, "durable": entry}
    run, _, lost = fail_over(group, "durable", background)
    print(f"\nSentinel failover with wait_replicas=1: {len(run.acked)} acknowledged, "
          f"{len(run.errors)} refused, {len(lost)} lost")  # fmt: skip
    assert lost == []


def test_wait_aof_with_wait_replicas(settings: Any) -> None:
    """WAITAOF (Redis 7.2+, Valkey 8): the enqueue returns once the master's AOF is fsynced and
    a replica has the write; without an AOF the enqueue raises, naming the reason, and says the
    task is queued."""
    valkey = server_binary("valkey")
    durable = SentinelGroup(1, "aof", "--appendonly", "yes", binary=valkey)
    plain = SentinelGroup(0, "noaof", binary=valkey)
    with durable, plain:
        settings.TASKS = {
            **settings.TASKS,
            "aof": sentinel_backend(durable, wait_aof=True, wait_replicas=1),
            "noaof": sentinel_backend(plain, wait_aof=True),
        }
        add = tasks.add.using(backend="aof")
        started = time.monotonic()
        assert add.enqueue(1, 2).status == TaskResultStatus.READY
        assert len(task_backends["aof"].enqueue_many(add, [((1, 2), {})] * 3)) == 3
        assert asyncio.run(add.aenqueue(1, 2)).status == TaskResultStatus.READY
        assert time.monotonic() - started < 0.5  # no wait for a once-a-second replica report
        with redis.Redis(port=durable.master.port) as master:
            assert int(master.info("persistence")["aof_enabled"]) == 1
        with pytest.raises(DurabilityNotConfirmed, match="appendonly") as caught:
            tasks.add.using(backend="noaof").enqueue(1, 2)
        [task_id] = caught.value.task_ids
        assert task_backends["noaof"].get_result(task_id).status == TaskResultStatus.READY
