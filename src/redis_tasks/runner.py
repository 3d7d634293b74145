"""Choosing the backends a worker serves and running a worker in the foreground or a thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured

from .backend import RedisBackend
from .compat import task_backends
from .worker import Worker

logger = logging.getLogger("redis_tasks")


def redis_backends(aliases: Sequence[str] = ()) -> list[RedisBackend]:
    """The named RedisBackends, or every configured one."""
    if aliases:
        chosen = []
        for alias in aliases:
            if alias not in task_backends.settings:
                raise ImproperlyConfigured(
                    f"No task backend {alias!r} in settings.TASKS "
                    f"(configured: {', '.join(task_backends.settings) or 'none'})."
                )
            backend = task_backends[alias]
            if not isinstance(backend, RedisBackend):
                raise ImproperlyConfigured(
                    f"Task backend {alias!r} is a {type(backend).__name__}, not a RedisBackend."
                )
            chosen.append(backend)
        return chosen
    return [b for b in task_backends.all() if isinstance(b, RedisBackend)]


class BackgroundWorker:
    """A worker on its own event loop in a daemon thread (autostart, tests, embedding)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._main, name="redis-tasks-worker", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            run = asyncio.create_task(self.worker.run())
            await asyncio.sleep(0)
            self._started.set()
            await run

        try:
            asyncio.run(main())
        except Exception:
            logger.exception("Background worker %s crashed", self.worker.worker_id)
        finally:
            self._started.set()

    def __str__(self) -> str:
        worker = self.worker
        return (
            f"background worker {worker.worker_id} started in this process (backends "
            f"{', '.join(b.alias for b in worker.backends)}, concurrency {worker.concurrency})"
        )

    def start(self) -> BackgroundWorker:
        self.thread.start()
        self._started.wait()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.worker.request_stop()
        self.thread.join(timeout)
