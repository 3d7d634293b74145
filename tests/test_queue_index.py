"""The queue index (`heads`, `due`): a claim reads the best queues, not every queue.

What is checked: the Redis work of a claim does not grow with the number of queues, whether the
worker serves every queue or names them; an index entry left too low (by a removal) never makes
a claim take a worse task first; a queue written without the index (an older version, by hand)
is found by the index check, and a burst worker's last claim runs that check at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from redis_tasks.compat import task_backends
from redis_tasks.keys import Keys
from redis_tasks.store import TaskStore
from tests import tasks
from tests.helpers import burst, wait_until

K = Keys("task_queue")


def store() -> TaskStore:
    return task_backends["default"].store


def claim(count: int = 1, queues: tuple[str, ...] = (), thorough: bool = False) -> Any:
    return asyncio.run(store().claim("index-test", count, queues, thorough=thorough))


def commands_run(client: redis.Redis, action: Any) -> int:
    """Redis commands that ``action`` ran, those inside scripts included (commandstats counts
    them), less the script calls themselves."""

    def total() -> int:
        stats = client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k not in SCRIPT_CALLS)

    client.config_resetstat()
    action()
    return total() - 1  # the INFO itself


SCRIPT_CALLS = {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_info", "cmdstat_config|resetstat"}


def fill(queues: int) -> None:
    backend = task_backends["default"]
    for i in range(queues):
        backend.enqueue_many(tasks.add.using(queue_name=f"q{i}"), [((i, 0), {})] * 3)
    # The best task sits in the last queue, so that no claim finds it by luck of order.
    tasks.add.using(queue_name=f"q{queues - 1}", priority=100).enqueue(0, 0)
    claim(1, thorough=True)  # the sweeps and the index check are done; their gates are closed
    for gate in (K.swept, K.reconciled):  # ... and stay closed, however slow this machine is
        store().connections.sync.set(gate, 2**52, px=60_000)
    tasks.add.using(queue_name=f"q{queues - 1}", priority=100).enqueue(1, 1)


@pytest.mark.parametrize("named", [False, True], ids=["every queue", "named queues"])
def test_claim_cost_does_not_grow_with_the_number_of_queues(
    clean_redis: redis.Redis, settings: Any, named: bool
) -> None:
    settings.TASKS = {"default": {**settings.TASKS["default"], "maxsize": None}}
    costs = {}
    for queues in (1, 300):
        clean_redis.flushdb()
        fill(queues)
        served = tuple(f"q{i}" for i in range(queues)) if named else ()
        found: list[Any] = []
        costs[queues] = commands_run(clean_redis, lambda: found.append(claim(2, served)))  # noqa: B023
        [batch] = found
        # The priority-100 task first, then the best of the rest (FIFO: q0's first task).
        assert [c.fields[b"args"] for c in batch.claims] == [b"[1,1]", b"[0,0]"]
    # With 300 queues the best two tasks lie in two queues, so the claim reads, takes from and
    # re-indexes one queue more than with one queue (three commands); ZMSCORE is one call,
    # whatever its length. Nothing grows with the number of queues.
    assert costs[300] <= costs[1] + 3, costs


def test_an_index_bound_left_too_low_never_inverts_priorities(clean_redis: redis.Redis) -> None:
    low = tasks.add.using(queue_name="a", priority=-50).enqueue(1, 0)
    high = tasks.add.using(queue_name="b", priority=50).enqueue(2, 0)
    clean_redis.zadd(K.heads, {"a": 0})  # as a removal from queue a could leave it
    batch = claim(1)
    assert [c.task_id for c in batch.claims] == [high.id]
    true_head = clean_redis.zscore(K.ready("a"), low.id)
    assert clean_redis.zscore(K.heads, "a") == true_head  # the claim that read it corrected it


def test_a_queue_written_without_the_index_is_found(clean_redis: redis.Redis) -> None:
    tasks.add.using(queue_name="indexed").enqueue(1, 1)
    claim(1, thorough=True)
    tasks.add.using(queue_name="indexed").enqueue(1, 2)
    hidden = tasks.add.using(queue_name="hidden").enqueue(2, 2)
    clean_redis.zrem(K.heads, "hidden")  # as an older version's enqueue would have left it
    assert [c.fields[b"args"] for c in claim(5).claims] == [b"[1,2]"]  # the check's gate: closed
    [found] = claim(5, thorough=True).claims
    assert found.task_id == hidden.id


def test_a_gate_opens_again_once_the_time_it_holds_has_passed(clean_redis: redis.Redis) -> None:
    tasks.add.using(queue_name="indexed").enqueue(1, 1)
    claim(1, thorough=True)
    hidden = tasks.add.using(queue_name="hidden").enqueue(2, 2)
    clean_redis.zrem(K.heads, "hidden")
    assert claim(5).claims == []  # the index check's gate is closed
    # A gate key holds the time its gate opens again; one left without its expiry (restored
    # from a dump, say) must not keep the gate shut for ever.
    clean_redis.set(K.reconciled, 1)
    [found] = claim(5).claims
    assert found.task_id == hidden.id
    reopens = int(clean_redis.get(K.reconciled) or 0)
    assert reopens > time.time() * 1000 and clean_redis.pttl(K.reconciled) > 0


def test_a_claim_that_moves_due_tasks_reports_the_next_due_time_after_the_move(
    clean_redis: redis.Redis,
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    soon = timezone.now() + timedelta(milliseconds=50)
    later = timezone.now() + timedelta(minutes=5)
    first = tasks.add.using(queue_name="d", run_after=soon).enqueue(1, 1)
    tasks.add.using(queue_name="d", run_after=later).enqueue(2, 2)
    soon_ms = soon.timestamp() * 1000
    wait_until(lambda: (lambda t: t[0] * 1000 + t[1] / 1000)(clean_redis.time()) > soon_ms)
    batch = claim(5)
    assert [c.task_id for c in batch.claims] == [first.id]
    assert batch.next_due_ms is not None
    assert abs(batch.next_due_ms - later.timestamp() * 1000) < 2  # not the moved one's time
    assert claim(5).next_due_ms == batch.next_due_ms  # nothing moved: the time read first


def test_a_burst_worker_checks_the_index_before_it_exits(clean_redis: redis.Redis) -> None:
    tasks.add.enqueue(0, 0)
    claim(1, thorough=True)
    hidden = tasks.add.using(queue_name="hidden").enqueue(3, 4)
    clean_redis.zrem(K.heads, "hidden")
    burst()
    hidden.refresh()
    assert hidden.return_value == 7
    assert clean_redis.smembers(K.queues) == set()
    assert not clean_redis.exists(K.heads, K.due)


def test_deferred_tasks_are_indexed_by_their_due_time(clean_redis: redis.Redis) -> None:
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(hours=1)
    soon = timezone.now() + timedelta(minutes=1)
    tasks.add.using(queue_name="d", run_after=later).enqueue(1, 1)
    tasks.add.using(queue_name="d", run_after=soon).enqueue(1, 1)
    due_at = clean_redis.zscore(K.due, "d")
    assert due_at is not None and abs(due_at - soon.timestamp() * 1000) < 2
    batch = claim(1)
    assert batch.claims == [] and batch.next_due_ms == int(due_at)
