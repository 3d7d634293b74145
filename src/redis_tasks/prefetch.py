"""Prefetch (``redis_tasks_worker --prefetch N``): claim more tasks than run at once.

A worker claims as many tasks as it has free slots, so one with few slots (``--concurrency 4``)
pays a Redis round trip for every few tasks, however short they are. With a prefetch, it claims
(and leases) up to ``concurrency + prefetch`` tasks, and at most ``concurrency`` of them run at
once: the others wait here, already leased (the heartbeat renews them), and start the moment a
body ends, without a trip to Redis.

What it costs, and why it is off by default: a prefetched task is held by this worker while it
waits, so another worker that is idle cannot run it (Celery's prefetch trade-off; keep it for
short tasks), and it counts as RUNNING in Redis from its claim. What it keeps: the waiting tasks
start best priority first, then in claim order (a task of higher priority claimed later does not
wait behind those claimed before it); a waiting task whose lease may have lapsed is checked
before it starts (execution.Freshness); at shutdown the waiting tasks go back to their queues at
once, not after the grace period; an operator's cancel of a waiting task ends it unrun.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class RunGate:
    """At most ``size`` task bodies at once; the claimed tasks waiting to start enter best
    priority first, then first come, first served."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a gate needs at least one place")
        self.free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def enter(self, priority: int) -> None:
        """Wait for a place (cancellable: a cancelled waiter takes none). A free place means
        nobody waits: ``leave`` hands places out until none is free or nobody is left."""
        if self.free > 0:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # given a place as it was cancelled
                self.leave()
            raise

    def leave(self) -> None:
        """A body ended: its place goes to the best waiter."""
        self.free += 1
        while self.free > 0 and self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if future.done():  # cancelled while waiting
                continue
            self.free -= 1
            future.set_result(None)
