"""Module-level tasks used by the tests (the framework requires module-level functions)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from redis_tasks.compat import task


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task(priority=10, queue_name="alternate")
async def nudge_nudge_wink_wink() -> list[str]:
    return ["say", "no", "more"]


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task()
def record(path: str, label: str) -> str:
    """Append a line to a file: an order of execution independent of Redis."""
    with open(path, "a") as f:
        f.write(label + "\n")
    return label


@task()
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@task()
def exit_task() -> None:
    raise SystemExit(3)


@task()
def unserializable_return() -> object:
    return object()


@task(takes_context=True)
def with_context(context: Any, value: int) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


# Concurrency probes: each call waits until `parties` calls are running at once, so a test
# passes only if the worker really runs that many at the same time.
_sync_barriers: dict[str, threading.Barrier] = {}
_sync_lock = threading.Lock()


@task()
def sync_rendezvous(name: str, parties: int) -> str:
    with _sync_lock:
        barrier = _sync_barriers.setdefault(name, threading.Barrier(parties))
    barrier.wait(timeout=10)
    return threading.current_thread().name


_async_arrivals: dict[str, int] = {}
_async_events: dict[str, asyncio.Event] = {}


@task()
async def async_rendezvous(name: str, parties: int) -> int:
    event = _async_events.setdefault(name, asyncio.Event())
    _async_arrivals[name] = _async_arrivals.get(name, 0) + 1
    if _async_arrivals[name] >= parties:
        event.set()
    await asyncio.wait_for(event.wait(), 10)
    return _async_arrivals[name]


@task()
def wait_for_file(started: str, release: str) -> str:
    """Signal that it started, then run until the test creates `release`."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("release file never appeared")
        time.sleep(0.01)
    return "released"


@task()
async def async_wait_for_file(started: str, release: str) -> str:
    """``wait_for_file`` on the event loop."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("release file never appeared")
        await asyncio.sleep(0.01)
    return "released"


def not_a_task() -> str:
    return "should never run"


@task()
def open_db_connection() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection is not None


@task()
def db_connection_is_closed() -> bool:
    from django.db import connection

    return connection.connection is None


# --- reliability ----------------------------------------------------------------------------
# Options beyond the framework's go through redis_tasks.task.task, which works on every Django
# version (Django 6.0's own decorator forwards no extra arguments).
from redis_tasks.task import task as redis_task  # noqa: E402


@redis_task(max_attempts=3, retry_backoff=0.01, takes_context=True)
def flaky(context: Any, fail_times: int) -> int:
    """Fails with ConnectionError on its first `fail_times` attempts."""
    if context.attempt <= fail_times:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return context.attempt


@redis_task(max_attempts=3, retry_on=[KeyError], retry_backoff=0.01)
def fails_with(kind: str) -> None:
    raise {"key": KeyError, "value": ValueError}[kind]("nope")


@redis_task(max_attempts=2, retry_backoff=60)
def fails_then_waits() -> None:
    raise ConnectionError("retry me in a minute")


@redis_task(timeout=0.2)
async def async_sleeps(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke up"


@redis_task(timeout=0.2)
def sync_waits_for_file(started: str, release: str) -> str:
    return str(wait_for_file.func(started, release))


@task()
def busy_cpu(seconds: float) -> int:
    """Hold the CPU (and mostly the GIL) longer than a lease."""
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        n += 1
    return n


@task()
async def blocks_the_loop(seconds: float) -> str:
    time.sleep(seconds)  # a badly written async task: the event loop stalls
    return "done"


@task()
def journal(path: str, task_key: str, seconds: float = 0.0) -> str:
    """Record each start and end in an append-only file: the fault tests' independent record."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"start {task_key} {os.getpid()}\n".encode())
        if seconds:
            time.sleep(seconds)
        os.write(fd, f"end {task_key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return task_key


@task()
def host_journal(path: str, task_key: str, hold_dir: str, seconds: float = 0.0) -> str:
    """journal() naming the host; between start and end it waits while ``hold_dir/<host name>``
    exists, so that a test can keep one host's tasks in flight while it cuts that host off."""
    host = socket.gethostname()
    hold = Path(hold_dir) / host
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"start {task_key} {host} {os.getpid()}\n".encode())
        deadline = time.monotonic() + 60
        while hold.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{hold} was never removed")
            time.sleep(0.02)
        time.sleep(seconds)
        os.write(fd, f"end {task_key} {host} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return f"{task_key}@{host}"


@task()
def crash_worker(path: str) -> None:
    """A poison task: it kills the process that runs it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"start crash {os.getpid()}\n".encode())
    os.close(fd)
    os._exit(13)


@redis_task(unique=True)
def unique_call(value: int) -> int:
    return value


@redis_task(unique="the-one")
def unique_by_name(value: int) -> int:
    return value


@redis_task(unique=lambda account, **_: f"account:{account}")
def unique_by_account(account: int, amount: int = 0) -> int:
    return amount


@redis_task(max_attempts=1)
def single_attempt() -> str:
    return "ran"


@redis_task(timeout=1)
def quick_with_timeout() -> str:
    return "quick"


@task()
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# --- the framework's contract (tests/test_contract.py) ---------------------------------------


@task()
def returns(kind: str) -> Any:
    """Values the framework normalises before storing them."""
    return {"bytes": b"caf\xc3\xa9", "tuple": (1, 2), "nan": float("nan"),
            "nested": {"k": (b"v", [(1,)])}}[kind]  # fmt: skip


def backoff_by_error(exception: BaseException, task_result: Any) -> float | None:
    """A retry policy in the shape of Django's proposal: wait on a 429, give up on a 404."""
    if "429" in str(exception):
        return 0.01
    return None


@redis_task(max_attempts=4, backoff=backoff_by_error, takes_context=True)
def http_call(context: Any, status: int, fail_times: int) -> int:
    if context.attempt <= fail_times:
        raise OSError(f"HTTP {status}")
    return context.attempt


@redis_task(max_attempts=3, retry_on=[KeyError], backoff=lambda exc, result: 0)
def backoff_within_retry_on(kind: str) -> None:
    raise {"key": KeyError, "value": ValueError}[kind]("nope")


# --- isolation (tests/test_isolation.py) -----------------------------------------------------


@redis_task(isolated=True)
def isolated_pid(a: int, b: int) -> list[int]:
    """Runs in a child process: its pid is not the worker's."""
    return [a + b, os.getpid()]


@redis_task(isolated=True)
async def isolated_async_pid() -> int:
    await asyncio.sleep(0)
    return os.getpid()


@redis_task(isolated=True, max_attempts=1)
def isolated_exit() -> None:
    os._exit(7)


@redis_task(isolated=True, max_attempts=1)
def isolated_segfault() -> None:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


@redis_task(isolated=True, backend="isolating")
def isolated_memory_hog() -> int:
    hog = bytearray(4 * 2**30)  # 4 GiB, far past the backend's isolation_memory_limit
    return len(hog)


@redis_task(isolated=True, timeout=0.5)
def isolated_hangs() -> None:
    time.sleep(60)


@redis_task(isolated=True, max_attempts=2, retry_on=[ValueError], retry_backoff=0.01)
def isolated_raises(message: str) -> None:
    raise ValueError(message)


# --- flow control (tests/test_flow_control.py) -----------------------------------------------


def _stamp(path: str, label: str) -> None:
    with open(path, "a") as f:
        f.write(f"{label} {time.time():.6f} {os.getpid()}\n")


@redis_task(rate_limit="4/s")
def rate_limited(path: str, n: int) -> int:
    _stamp(path, f"start-{n}")
    return n


@redis_task(concurrency_limit=2)
def two_at_once(path: str, n: int, seconds: float = 0.3) -> int:
    _stamp(path, f"start-{n}")
    time.sleep(seconds)
    _stamp(path, f"end-{n}")
    return n


@redis_task(concurrency_limit=1, limit_key="customer")
def one_per_customer(path: str, customer: str, n: int) -> str:
    _stamp(path, f"start-{customer}-{n}")
    time.sleep(0.3)
    _stamp(path, f"end-{customer}-{n}")
    return customer


@redis_task(rate_limit="1/m")
def once_a_minute(n: int) -> int:
    return n


@redis_task(concurrency_limit=1)
async def async_waits_long(path: str) -> str:
    _stamp(path, "start")
    await asyncio.sleep(30)
    return "not cancelled"


@redis_task()
def sync_checks_for_cancel(path: str) -> str:
    from redis_tasks import cancellation

    _stamp(path, "start")
    for _ in range(600):
        cancellation.check()
        time.sleep(0.05)
    return "not cancelled"


@redis_task()
def sync_ignores_cancel(path: str, seconds: float) -> str:
    _stamp(path, "start")
    time.sleep(seconds)
    return "finished anyway"


# --- workflows (tests/test_workflows.py) -----------------------------------------------------


@task()
def wf_double(x: int) -> int:
    return x * 2


@task()
def wf_add(x: int, y: int) -> int:
    return x + y


@task()
def wf_fail(x: int) -> None:
    raise ValueError(f"step refused {x}")


@task()
def wf_square(path: str, n: int, seconds: float = 0.0) -> int:
    _stamp(path, f"member-{n}")
    time.sleep(seconds)
    return n * n


@task()
def wf_collect(values: list[int], path: str = "") -> int:
    if path:
        _stamp(path, "callback-0")
    return sum(values)


@redis_task(max_attempts=3, retry_on=[ConnectionError], retry_backoff=0.01, takes_context=True)
def wf_flaky_member(context: Any, n: int) -> int:
    if context.attempt <= 2:
        raise ConnectionError(f"attempt {context.attempt} fails")
    return n


@redis_task(unique=True)
def wf_unique_member(n: int) -> int:
    return n


@task(takes_context=True)
def reports_progress(context: Any, release: str, steps: int) -> int:
    from redis_tasks import progress

    for done in range(1, steps + 1):
        if done == 2:  # a step slower than the throttle: its report is written
            time.sleep(progress.THROTTLE + 0.1)
        progress.report(context, done, total=steps, message=f"step {done}")
        if done == 2:  # mid-run: wait until the test has looked
            while not os.path.exists(release):
                time.sleep(0.01)
    return steps


@task()
def logs_a_line(text: str) -> None:
    """Logs one line (tests/test_observability.py checks the record names this task)."""
    import logging

    logging.getLogger("tests.tasks").warning("sync says %s", text)


@task()
async def alogs_a_line(text: str) -> None:
    import logging

    logging.getLogger("tests.tasks").warning("async says %s", text)
