"""No-op tasks for the benchmark (the framework needs module-level task functions)."""

from __future__ import annotations

import asyncio
import time

from redis_tasks.compat import task


@task()
def noop() -> None:
    """A sync task that does nothing: what is measured is the backend and the worker."""


@task()
async def anoop() -> None:
    """An async task that does nothing."""


@task()
def sleep10() -> None:
    """A sync task that sleeps 10 ms (it holds a thread, not a CPU)."""
    time.sleep(0.01)


@task()
async def asleep10() -> None:
    """An async task that sleeps 10 ms (it holds neither)."""
    await asyncio.sleep(0.01)
