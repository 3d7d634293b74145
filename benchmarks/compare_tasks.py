"""Tasks for ``compare.py`` and ``own_method.py``, the same functions for every system
(django.tasks on Django 6)."""

from __future__ import annotations

import asyncio
import time

from redis_tasks.compat import task


@task()
def noop() -> None:
    """A sync task that does nothing: what is measured is the backend and the worker."""


@task()
def echo(value: int) -> int:
    """Returns its argument: the task of threadmill's published method (``own_method.py``)."""
    return value


@task()
async def anoop() -> None:
    """An async task that does nothing."""


@task()
def sleep10() -> None:
    """A sync task that sleeps 10 ms (time.sleep: it holds a thread, not a CPU)."""
    time.sleep(0.01)


@task()
async def asleep10() -> None:
    """An async task that sleeps 10 ms (asyncio.sleep: it holds neither)."""
    await asyncio.sleep(0.01)
