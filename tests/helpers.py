"""Running workers from tests: in-process burst workers and worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis_tasks.compat import task_backends
from redis_tasks.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def burst(*aliases: str, **options: Any) -> Worker:
    """Run a burst worker in this process until every due task has run; return it."""
    backends = [task_backends[a] for a in (aliases or ("default",))]
    worker = Worker(backends, burst=True, **options)
    asyncio.run(worker.run())
    return worker


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = env.get("DJANGO_SETTINGS_MODULE", "tests.settings")
    env.update(extra)
    return env


def manage(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start `python -m django ...` with the test settings in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=popen.pop("env", child_env()),
        text=True,
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.STDOUT),
        **popen,
    )


def stop_processes(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """Stop worker processes a test started: SIGTERM (after SIGCONT, for a stopped one), then
    SIGKILL for any still there after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, every: float = 0.01) -> Any:
    """Poll a condition that another process makes true; fail loudly at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def ran_under(pid: int) -> int:
    """The worker a journal's pid ran under: itself, or the worker whose child it is (an
    isolated attempt), read while that child is alive (a worker keeps its idle children)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return pid
    parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    return parent if b"redis_tasks.isolation" in command else pid
