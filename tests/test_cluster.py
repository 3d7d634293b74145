"""Redis Cluster: three backend instances on a local 3-master cluster, one instance per master.

Every key of an instance shares one hash tag, so an instance lives on one slot; spreading work
over shards means several instances (docs/deployment.md). One worker serves all three.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.exceptions import DurabilityNotConfirmed
from redis_tasks.ops import Inspector
from tests import tasks
from tests.helpers import burst, wait_until
from tests.topologies import LocalCluster, cluster_backends

SHARDS = ("shard0", "shard1", "shard2")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    found = LocalCluster(masters=3).start()
    yield found
    found.stop()


@pytest.fixture
def shards(cluster: LocalCluster, settings: Any) -> list[RedisBackend]:
    """Backends shard0..2, the keys of shardN on the cluster's Nth master; an empty cluster."""
    cluster.flushall()
    namespaces = cluster.namespace_per_node()
    entries = cluster_backends(cluster.url, namespaces, lease_timeout=1)
    entries["shard2"]["schedules"] = {
        "tick": {"task": "tests.tasks.add", "every": 1, "args": [20, 22]}
    }
    settings.TASKS = {**settings.TASKS, **entries}
    return [task_backends[alias] for alias in SHARDS]


def node_client(cluster: LocalCluster, index: int) -> redis.Redis:
    return redis.Redis(port=cluster.nodes[index].port)


def test_each_instance_lives_on_its_own_master(
    cluster: LocalCluster, shards: list[RedisBackend]
) -> None:
    results = [tasks.add.using(backend=b.alias).enqueue(i, i) for i, b in enumerate(shards)]
    for index, (backend, result) in enumerate(zip(shards, results, strict=True)):
        keys = backend.store.keys
        with node_client(cluster, index) as client:
            # The server's own view: every key of the instance hashes to one slot ...
            names = (keys.task(result.id), keys.queues, keys.ready("default"), keys.wake)
            slots = {client.execute_command("CLUSTER", "KEYSLOT", k) for k in names}
            [slot] = slots
            # ... which this master serves, and which holds the task; no other master does.
            [owner] = [
                port
                for first, last, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS")
                if first <= slot <= last
            ]
            assert owner == cluster.nodes[index].port
            assert client.exists(keys.task(result.id)) == 1
        for other in set(range(3)) - {index}:
            with node_client(cluster, other) as client:
                assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0


def test_enqueue_priorities_bulk_and_results_across_shards(
    shards: list[RedisBackend], tmp_path: Path
) -> None:
    logs = {b.alias: tmp_path / f"{b.alias}.log" for b in shards}
    for backend in shards:
        record = tasks.record.using(backend=backend.alias)
        log = str(logs[backend.alias])
        record.using(priority=-10).enqueue(log, "low")
        record.using(priority=50).enqueue(log, "high")
        record.using(queue_name="other", priority=10).enqueue(log, "other-queue")
        backend.enqueue_many(record, [((log, f"bulk{i}"), {}) for i in range(3)])
    added = asyncio.run(tasks.async_add.using(backend="shard1").aenqueue(40, 2))

    worker = burst(*SHARDS, concurrency=1)

    assert worker.tasks_done == 3 * 6 + 1
    for backend in shards:
        order = logs[backend.alias].read_text().split()
        assert order == ["high", "other-queue", "bulk0", "bulk1", "bulk2", "low"]
    # A result read by a fresh backend object (another process would do the same), sync and async.
    fresh = RedisBackend("shard1", _params("shard1"))
    result = fresh.get_result(added.id)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
    again = asyncio.run(fresh.aget_result(added.id))
    assert again.return_value == 42 and again.worker_ids == [worker.worker_id]


def _params(alias: str) -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.TASKS[alias])


def test_run_after_waits_on_every_shard(shards: list[RedisBackend], background: Any) -> None:
    due = timezone.now() + timedelta(seconds=1)
    results = [tasks.add.using(backend=b.alias, run_after=due).enqueue(1, 2) for b in shards]
    assert all(Inspector(b).overview()["totals"]["deferred"] == 1 for b in shards)
    background(*SHARDS)
    for result in results:
        wait_until(lambda r=result: r.refresh() or r.status == TaskResultStatus.SUCCESSFUL)
        assert result.started_at >= due.replace(microsecond=due.microsecond // 1000 * 1000)


def test_a_lost_lease_is_recovered_on_its_shard(shards: list[RedisBackend]) -> None:
    backend = shards[1]
    result = tasks.add.using(backend="shard1").enqueue(2, 3)
    batch = asyncio.run(backend.store.claim("ghost-worker", 1))  # claims, then never renews
    assert [c.task_id for c in batch.claims] == [result.id]
    client = backend.store.connections.sync
    deadline = client.zscore(backend.store.keys.running, result.id)
    assert deadline is not None

    def lease_expired() -> bool:
        seconds, micros = client.time()
        return bool(seconds * 1000 + micros // 1000 > deadline)

    wait_until(lease_expired, timeout=5)
    worker = burst(*SHARDS)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert result.worker_ids == ["ghost-worker", worker.worker_id]
    assert [e.exception_class_path for e in result.errors] == ["redis_tasks.exceptions.WorkerLost"]


def test_periodic_task_runs_on_its_shard(shards: list[RedisBackend], background: Any) -> None:
    background(*SHARDS)
    done = shards[2].store.keys.done("SUCCESSFUL")
    client = shards[2].store.connections.sync
    wait_until(lambda: client.zcard(done) >= 1, timeout=10)
    [summary] = Inspector(shards[2]).list_tasks("successful")[:1]
    assert summary.task == "tests.tasks.add"
    assert all(Inspector(b).overview()["totals"]["successful"] == 0 for b in shards[:2])


def test_cli_sees_every_shard(shards: list[RedisBackend]) -> None:
    for i, backend in enumerate(shards):
        backend.enqueue_many(tasks.add, [((1, 1), {})] * (i + 1))
    tasks.fail.using(backend="shard0").enqueue()
    burst("shard0")

    out = io.StringIO()
    call_command("redis_tasks", *[f"--backend={a}" for a in SHARDS], "--json", "status", stdout=out)
    views = {v["backend"]: v for v in json.loads(out.getvalue())}
    assert [views[a]["totals"]["ready"] for a in SHARDS] == [0, 2, 3]
    assert views["shard0"]["totals"]["failed"] == 1

    failed = Inspector(shards[0]).list_tasks("failed")[0].id
    call_command("redis_tasks", "--backend=shard0", "retry", failed, "--yes", stdout=io.StringIO())
    assert Inspector(shards[0]).overview()["totals"]["ready"] == 1


@pytest.mark.django_db
def test_dashboard_overview_shows_every_shard(shards: list[RedisBackend], admin_user: Any) -> None:
    for i, backend in enumerate(shards):
        backend.enqueue_many(tasks.add, [((1, 1), {})] * (i + 1))
    client = Client()
    client.force_login(admin_user)
    response = client.get(reverse("admin:redis_tasks_dashboard_dashboard_changelist"))
    assert response.status_code == 200
    seen = {b.alias: b for b in response.context["backends"]}
    for i, alias in enumerate(SHARDS):
        assert seen[alias].error is None
        assert seen[alias].totals["ready"] == i + 1


def test_wait_replicas_without_replicas_says_the_task_is_queued(
    cluster: LocalCluster, shards: list[RedisBackend], settings: Any
) -> None:
    settings.TASKS = {
        **settings.TASKS,
        "shard1": {**settings.TASKS["shard1"], "wait_replicas": 1, "wait_timeout": 0.05},
    }
    with pytest.raises(DurabilityNotConfirmed, match="only 0 of 1 replicas") as caught:
        tasks.add.using(backend="shard1").enqueue(1, 1)
    [task_id] = caught.value.task_ids
    assert task_backends["shard1"].get_result(task_id).status == TaskResultStatus.READY
    with pytest.raises(DurabilityNotConfirmed, match="only 0 of 1 replicas"):
        asyncio.run(tasks.add.using(backend="shard1").aenqueue(1, 1))  # the asyncio cluster client
