"""The demo's tasks: module-level functions decorated with the framework's ``@task``."""

from __future__ import annotations

import asyncio
import hashlib
import time

try:
    from django.tasks import task  # Django 6.0+
except ImportError:
    from django_tasks import task  # Django 5.2 with the django-tasks backport


@task()
def checksum(n: int) -> str:
    """Sync: runs in one of the worker's threads."""
    time.sleep(0.05)  # pretend to read a file
    return hashlib.sha256(str(n).encode()).hexdigest()[:12]


@task()
async def fetch(n: int) -> dict[str, int]:
    """Async: runs on the worker's event loop."""
    await asyncio.sleep(0.1)  # pretend to wait for an HTTP response
    return {"page": n, "status": 200}


@task(priority=50)
async def send_alert(message: str) -> str:
    """High priority: runs before everything enqueued with a lower priority."""
    await asyncio.sleep(0.01)
    return f"sent: {message}"


@task(priority=10, queue_name="alternate")
async def nudge(name: str) -> list[str]:
    """On another queue; the worker serves every queue and orders them all by priority."""
    return ["nudge", "nudge", name]


@task(priority=-50)
def cleanup(n: int) -> int:
    """Low priority: runs once nothing more urgent waits."""
    time.sleep(0.01)
    return n


@task()
def explode(reason: str) -> None:
    """Always fails: the result records the exception class and its traceback."""
    raise ValueError(reason)


@task()
def remind(text: str) -> str:
    """Enqueued with .using(run_after=...): it waits in Redis until it is due."""
    return f"reminder: {text}"


@task()
def combine(checksums: list[str]) -> str:
    """A chord's callback: runs once, after every member, with their values in order."""
    return hashlib.sha256("".join(checksums).encode()).hexdigest()[:12]
