"""No-op tasks for the benchmark (the framework needs module-level task functions)."""

from __future__ import annotations

from redis_tasks.compat import task
from redis_tasks.task import task as redis_task


@task()
def noop() -> None:
    """A sync task that does nothing: what is measured is the backend and the worker."""


@task()
async def anoop() -> None:
    """An async task that does nothing."""


@redis_task(isolated=True)  # type: ignore[untyped-decorator]
def isolated_noop() -> None:
    """A sync no-op run in a child process (benchmarks/isolation.py)."""


@redis_task(rate_limit="2/s")  # type: ignore[untyped-decorator]
def throttled_noop() -> None:
    """Two a second across every worker (benchmarks/flow_control.py)."""


@task()
def value(n: int) -> int:
    """A chord member (benchmarks/workflows.py)."""
    return n


@task()
def total(values: list[int]) -> int:
    """A chord's callback (benchmarks/workflows.py)."""
    return sum(values)
