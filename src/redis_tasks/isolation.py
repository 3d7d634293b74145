"""Running a task in a child process of its own, so that a crash, a hard timeout or an
out-of-memory kill ends that attempt only: the worker, and the tasks it runs beside it, survive.

Used for tasks marked ``isolated`` (``@task(isolated=True)``, or a backend's ``"isolated": True``)
and, always, for a task whose previous attempt ended with its worker lost: it may be what killed
that worker, and the tasks that died with it are innocent until shown otherwise. Running such a
task in a child means it can take nothing down with it again (see docs/reliability.md).

**Children are fresh interpreters** (``python -m redis_tasks.isolation``), started on first
need and kept for the next isolated task, not forks of the worker: the worker has threads (its
heartbeat, its sync pool) and an event loop, and a fork keeps none of them but may copy a lock
another thread held, which deadlocks the child. A fresh interpreter sets Django up itself, so it
opens its own database connections and runs an async task on its own event loop. Each child runs
one task at a time; it reads a request from its stdin and writes the reply on its original
stdout, while what the task prints goes to the worker's stderr.

A child that dies mid-task (a signal, ``os._exit``, the OOM killer) is recorded as a lost
attempt (``ChildProcessDied``, with the exit code or signal), retried like one lost with its
worker, up to ``max_attempts``. At its ``timeout`` (sync or async alike) a child is killed, not
abandoned. Optionally each child runs under an address-space limit
(``isolation_memory_limit``, MiB), so a memory hog meets ``MemoryError`` in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ChildProcessDied

if TYPE_CHECKING:
    from .calls import Claim
    from .execution import Outcome

logger = logging.getLogger("redis_tasks")

MAX_IDLE = 4  # children kept between isolated tasks
# Children starting at once: a start is a Python and a Django set-up, a second of CPU or so. A
# worker killed with 50 tasks in flight sends them all back isolated; started 50 at once, they
# would starve each other for half a minute, while a few starts and the children they free
# (a task of 50 ms gives its child back at once) get through them in a few seconds.
MAX_STARTING = max(2, os.cpu_count() or 2)


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "its pipe closed"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Child:
    """One child process, and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @staticmethod
    async def start(memory_limit_mb: int | None) -> Child | None:
        """A child ready for a task (Django set up), or None if it died starting."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["REDIS_TASKS_CHILD_PARENT"] = str(os.getpid())
        if memory_limit_mb is not None:
            env["REDIS_TASKS_CHILD_MEMORY_MB"] = str(memory_limit_mb)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redis_tasks.isolation",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=2**26,  # a reply holds a return value as big as the task makes it
        )  # fmt: skip
        child = Child(process)
        assert process.stdout is not None
        try:
            ready = await process.stdout.readline()  # it has set Django up
        except BaseException:
            await child.kill()
            raise
        if not ready:
            await child.kill()
            return None
        return child

    async def call(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The child's reply, or None if it died before giving one."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            await self.process.stdin.drain()
            line = await self.process.stdout.readline()
        except (ConnectionError, BrokenPipeError):
            line = b""
        if not line:
            await self.process.wait()
            return None
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


class ChildPool:
    """The isolated tasks' children of one worker (kept apart by their memory limit)."""

    def __init__(self) -> None:
        self._idle: dict[int | None, list[Child]] = {}
        self._starting = 0
        self._changed = asyncio.Condition()  # a child given back, or a start ended

    async def _take(self, memory_limit_mb: int | None) -> Child | None:
        """An idle child, or a new one once fewer than ``MAX_STARTING`` are starting (None:
        it died starting)."""
        idle = self._idle.setdefault(memory_limit_mb, [])
        async with self._changed:
            await self._changed.wait_for(lambda: bool(idle) or self._starting < MAX_STARTING)
            if idle:
                return idle.pop()
            self._starting += 1
        try:
            return await Child.start(memory_limit_mb)
        finally:
            async with self._changed:
                self._starting -= 1
                self._changed.notify_all()

    async def _give_back(self, child: Child, memory_limit_mb: int | None) -> None:
        idle = self._idle.setdefault(memory_limit_mb, [])
        if len(idle) >= MAX_IDLE:
            await child.kill()
            return
        async with self._changed:
            idle.append(child)
            self._changed.notify_all()

    async def run(
        self, claim: Claim, timeout: float | None, memory_limit_mb: int | None,
        still_ours: Callable[[], Awaitable[bool]],
        failed: Callable[[BaseException], Outcome], timed_out: Callable[[float], Outcome],
        succeeded: Callable[[str, Any], Outcome], dropped: Callable[[], Outcome],
    ) -> Outcome:  # fmt: skip
        """Run the claimed task in a child; its outcome, as the worker records outcomes. A
        child may take a second to start: the claim is checked (``still_ours``) once the child
        is ready, right before its body starts."""
        child = await self._take(memory_limit_mb)
        if child is None:
            return failed(ChildProcessDied("a child process for an isolated task died starting"))
        if not await still_ours():
            await self._give_back(child, memory_limit_mb)
            return dropped()
        request = {
            "id": claim.task_id,
            "fields": {k.decode(): v.decode() for k, v in claim.fields.items()},
        }
        try:
            reply = await asyncio.wait_for(child.call(request), timeout)
        except TimeoutError:
            await child.kill()
            logger.error("Task %s ran past its %ss timeout; its child process was killed",
                         claim.task_id, timeout)  # fmt: skip
            return timed_out(timeout or 0)
        except BaseException:  # cancelled (shutdown): the child may be mid-task
            await child.kill()
            raise
        if reply is None:
            code = child.process.returncode
            return failed(ChildProcessDied(
                f"the child process running task {claim.task_id} died ({_describe(code)})",
                code,
            ))  # fmt: skip
        await self._give_back(child, memory_limit_mb)
        if reply["status"] == "SUCCESSFUL":
            return succeeded(reply["return_json"], json.loads(reply["return_json"]))
        return failed(RemoteError(reply["error"][0], reply["error"][1]))

    async def close(self) -> None:
        idle, self._idle = [c for children in self._idle.values() for c in children], {}
        for child in idle:
            assert child.process.stdin is not None
            child.process.stdin.close()  # EOF: the child exits
            try:
                await asyncio.wait_for(child.process.wait(), 5)
            except TimeoutError:
                await child.kill()


class RemoteError(Exception):
    """An exception raised by a task in a child process, as it came back: its class path and
    its traceback (recorded as the task's error under that class path)."""

    def __init__(self, exception_class_path: str, traceback: str) -> None:
        last = traceback.rstrip().rpartition("\n")[2]
        super().__init__(last or exception_class_path)
        self.exception_class_path = exception_class_path
        self.traceback = traceback


# --- the child's side -------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """Die with the worker: a child left behind would read a request its dead parent sent and
    run a task nobody owns any more (Linux: PR_SET_PDEATHSIG; elsewhere, the check before each
    task)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(0)


def child_main() -> None:  # pragma: no cover - runs in the child process (tests drive it)
    parent = int(os.environ["REDIS_TASKS_CHILD_PARENT"])
    _die_with(parent)
    reply_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # what the tasks print goes to the worker's stderr, not into the replies
    limit = os.environ.get("REDIS_TASKS_CHILD_MEMORY_MB")
    if limit:
        import resource

        size = int(limit) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    import django

    django.setup()
    from . import execution
    from .calls import Claim

    reply_out.write(b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        if os.getppid() != parent:
            os._exit(0)
        request = json.loads(line)
        fields = {k.encode(): v.encode() for k, v in request["fields"].items()}
        claim = Claim(request["id"], "", fields)
        outcome = execution.run_here(claim)
        reply: dict[str, Any]
        if outcome.status == "SUCCESSFUL":
            reply = {"status": "SUCCESSFUL", "return_json": outcome.return_json}
        else:
            error = outcome.error
            assert error is not None
            reply = {"status": "FAILED",
                     "error": [error.exception_class_path, error.traceback]}  # fmt: skip
        reply_out.write(json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":  # pragma: no cover
    child_main()
