"""The sync-task threads (threads.py): woken sparingly, yet long calls still run side by side."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from redis_tasks import threads as threads_module
from redis_tasks.threads import TaskThreads


def test_calls_queued_together_run_on_the_one_awake_thread() -> None:
    """With the loop not running, no spreading can happen: only the thread the first call woke
    may run them, so ten calls run on exactly one thread of the eight."""
    loop = asyncio.new_event_loop()
    threads = TaskThreads(loop, 8, name="test")
    ran_on: list[int] = []
    all_ran = threading.Event()

    def call(n: int) -> int:
        ran_on.append(threading.get_ident())
        if len(ran_on) == 10:
            all_ran.set()
        return n * 2

    try:
        futures = [threads.submit(call, n) for n in range(10)]
        assert all_ran.wait(10)
        assert len(set(ran_on)) == 1
        results = loop.run_until_complete(asyncio.gather(*futures))
        assert results == [n * 2 for n in range(10)]
    finally:
        threads.shutdown(wait=True)
        loop.close()


def test_calls_that_wait_for_each_other_still_run_side_by_side() -> None:
    """Six calls that can only return once all six run at once: the calls left waiting behind
    a busy thread get threads of their own."""

    async def main() -> list[int]:
        threads = TaskThreads(asyncio.get_running_loop(), 6, name="test")
        barrier = threading.Barrier(6, timeout=10)
        try:
            return await asyncio.gather(*(threads.submit(barrier.wait) for _ in range(6)))
        finally:
            threads.shutdown(wait=True)

    assert sorted(asyncio.run(main())) == list(range(6))  # Barrier.wait: each its own index


def test_shutdown_runs_the_calls_already_queued() -> None:
    loop = asyncio.new_event_loop()
    threads = TaskThreads(loop, 2, name="test")
    ran: list[int] = []
    futures = [threads.submit(ran.append, n) for n in range(5)]
    threads.shutdown(wait=True)
    assert sorted(ran) == list(range(5))
    loop.run_until_complete(asyncio.gather(*futures))
    loop.close()


def test_a_call_behind_a_long_one_wakes_a_thread_at_once(monkeypatch: Any) -> None:
    """With the loop not running no spreading can happen, so only the rule at submit can start
    the second call: every awake thread is in a call begun long enough ago (any time, here)."""
    monkeypatch.setattr(threads_module, "SPREAD_AFTER", 0.0)
    loop = asyncio.new_event_loop()
    threads = TaskThreads(loop, 4, name="test")
    long_began, release, second_ran = threading.Event(), threading.Event(), threading.Event()

    def long_call() -> None:
        long_began.set()
        assert release.wait(10)

    try:
        threads.submit(long_call)
        assert long_began.wait(10)
        threads.submit(second_ran.set)
        assert second_ran.wait(10), "the second call waited behind the long one"
    finally:
        release.set()
        threads.shutdown(wait=True)
        loop.close()
