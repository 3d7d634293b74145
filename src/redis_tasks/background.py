"""A worker on its own event loop in a daemon thread of this process: the autostarted worker
(``autostart.py``), tests, and projects that embed one."""

from __future__ import annotations

import asyncio
import logging
import threading

from .worker import Worker

logger = logging.getLogger("redis_tasks")


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
