"""The worker runtime: one consumer coroutine per backend, a shared capacity, a lease heartbeat.

Shape (after SAQ): consumers claim up to the free capacity in one script call, start each task
(async on the loop, sync in our own thread pool), and when nothing is due block on the
backend's wake list until an enqueue or the next deferred task's due time. One stop event ends
claiming; running tasks are then awaited. Leases are renewed from a thread with its own Redis
connections, so neither a busy event loop nor CPU-bound sync tasks can starve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from . import execution, signalling
from .compat import task_finished
from .connection import redacted
from .exceptions import InvalidTaskPayload
from .scheduler import Scheduler
from .threads import TaskThreads

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .sender import SyncClient
    from .store import Claim

logger = logging.getLogger("redis_tasks")
T = TypeVar("T")

IDLE_WAIT_MAX = 1.0  # seconds an idle consumer blocks before sweeping expired tasks and leases
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
DEFAULT_GRACE = 25.0  # seconds running tasks get after SIGTERM before they are handed back
EXIT_RESTART = 3  # exit code asking the supervisor for a fresh process (abandoned threads)
EXIT_UNREACHABLE = 2  # exit code of a burst worker that gave up on an unreachable Redis
DEFAULT_BURST_GIVE_UP = 30.0  # seconds of outage after which a burst worker gives up


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        backends: Sequence[RedisBackend],
        *,
        queues: Sequence[str] = (),
        concurrency: int = 10,
        burst: bool = False,
        max_tasks: int | None = None,
        grace: float | None = DEFAULT_GRACE,
        max_abandoned: int | None = None,
        worker_id: str | None = None,
        on_task_done: Callable[[], None] | None = None,
        scheduler: bool = True,
        give_up_after: float = DEFAULT_BURST_GIVE_UP,
        risk_level: int = logging.WARNING,
    ) -> None:
        if not backends:
            raise ValueError("a worker needs at least one RedisBackend")
        self.backends = list(backends)
        self.queues = list(queues)
        self.concurrency = concurrency
        self.burst = burst
        self.max_tasks = max_tasks
        self.grace = grace
        self.max_abandoned = concurrency if max_abandoned is None else max_abandoned
        self.worker_id = worker_id or new_worker_id()
        self.on_task_done = on_task_done
        self.run_scheduler = scheduler and not burst
        self.give_up_after = give_up_after  # burst mode only: a long-running worker never does
        self.risk_level = risk_level  # of the lines on server settings that can lose tasks
        self.tasks_done = 0
        self.tasks_failed = 0
        self.started_at = datetime.now(UTC).isoformat()
        self.exit_code = 0
        self.abandoned_threads = 0  # sync tasks past their timeout whose thread still runs
        self._abandoned_lock = threading.Lock()
        self._claimed = 0  # tasks claimed, and slots reserved for claims not answered yet
        self._outstanding = 0  # slots reserved for claims not answered yet
        self._free = concurrency
        self._leases: dict[str, dict[str, str]] = {b.alias: {} for b in self.backends}
        self._leases_lock = threading.Lock()
        self._running: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None
        self._capacity_freed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: TaskThreads | None = None
        self._limit_reached = False

    # --- control ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; running tasks get the grace period. Safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # A plain callback, not a task: a task could still be pending when the loop ends.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopped already
                loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        """Runs on the loop: no await, so it cannot be left half done."""
        assert self._stopping is not None and self._capacity_freed is not None
        self._stopping.set()
        self._capacity_freed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._capacity_freed = asyncio.Event()
        # Room for the abandoned threads of timed-out sync tasks, so they cost no capacity.
        self._threads = TaskThreads(
            self._loop, self.concurrency + self.max_abandoned, name="redis-tasks"
        )
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat,
            args=(heartbeat_stop,),
            name="redis-tasks-heartbeat",
            daemon=True,
        )
        heartbeat.start()
        logger.info(
            "Worker %s started: backends %s, queues %s, concurrency %d",
            self.worker_id,
            ", ".join(b.alias for b in self.backends),
            ", ".join(self.queues) or "all",
            self.concurrency,
        )
        try:
            await self._warn_about_server()
            consumers = [asyncio.create_task(self._consume(b)) for b in self.backends]
            timers = [asyncio.create_task(self._schedule(b)) for b in self.backends]
            for failure in await asyncio.gather(*consumers, *timers, return_exceptions=True):
                if isinstance(failure, BaseException):
                    logger.error("Worker %s: a loop failed", self.worker_id, exc_info=failure)
                    self._stop()
            await self._drain()
        finally:
            heartbeat_stop.set()
            # Abandoned threads cannot be joined; the process exits without waiting for them.
            self._threads.shutdown(wait=self.abandoned_threads == 0)
            heartbeat.join()
            for backend in self.backends:
                await backend.store.connections.aclose()
        logger.info("Worker %s stopped after %d tasks", self.worker_id, self.tasks_done)

    async def _drain(self) -> None:
        """Give running tasks the grace period, then hand the rest back to their queues."""
        if not self._running:
            return
        grace = None if self._limit_reached else self.grace
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        if pending:
            logger.warning(
                "Worker %s: %d task(s) still running after the %ss grace period; "
                "handing them back to their queues",
                self.worker_id, len(pending), self.grace,
            )  # fmt: skip
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _warn_about_server(self) -> None:
        for backend in self.backends:
            try:
                risks = await asyncio.to_thread(backend.store.server_risks)
            except (redis.RedisError, OSError) as exc:
                logger.warning("Worker %s: Redis of %r unreachable at start: %s",
                               self.worker_id, backend.alias, exc)  # fmt: skip
                continue
            for risk in risks:
                logger.log(self.risk_level, "Backend %r: %s", backend.alias, risk)

    # --- consuming ----------------------------------------------------------------------

    def _queues_for(self, backend: RedisBackend) -> list[str]:
        if self.queues:
            return self.queues
        return sorted(backend.queues)  # empty: every queue that holds tasks

    async def _reserve(self) -> int:
        """Wait for free capacity and take all of it (bounded by --max-tasks); 0 when stopping
        or when --max-tasks tasks have been claimed. Reservations of other consumers whose
        claim has not answered yet may still come back unused: the limit is only reached once
        none is outstanding."""
        assert self._capacity_freed is not None
        # Everything here runs on the one loop, so no lock: no await between test and take.
        while not self.stopping:
            room = self._free
            if self.max_tasks is not None:
                left = self.max_tasks - self._claimed
                if left <= 0 and self._outstanding == 0:
                    return 0
                room = min(room, left)
            if room > 0:
                self._free -= room
                self._claimed += room
                self._outstanding += room
                return room
            self._capacity_freed.clear()
            await self._capacity_freed.wait()
        return 0

    def _claimed_with(self, reserved: int, claimed: int) -> None:
        """A claim made with ``reserved`` slots answered with ``claimed`` tasks (0 if it
        failed): the rest of the reservation goes back."""
        assert self._capacity_freed is not None
        self._outstanding -= reserved
        self._claimed -= reserved - claimed
        self._free += reserved - claimed
        self._capacity_freed.set()  # waiters look again: capacity, or the limit, has changed

    def _release(self) -> None:
        """A task's slot is free again."""
        assert self._capacity_freed is not None
        self._free += 1
        self._capacity_freed.set()

    async def _consume(self, backend: RedisBackend) -> None:
        store = backend.store
        queues = self._queues_for(backend)
        mine: set[asyncio.Task[None]] = set()
        backoff = BACKOFF_MIN
        outage_since: float | None = None  # when claims began to fail
        # The first claim, and a burst worker's last before it exits, sweep and check the
        # queue index now rather than at most every SWEEP_MS / RECONCILE_MS.
        thorough = True
        while not self.stopping:
            count = await self._reserve()
            if count == 0:
                if not self.stopping:  # --max-tasks reached: the other consumers stop too,
                    self._limit_reached = True  # and running tasks finish without a deadline
                    self._stop()
                break
            try:
                batch = await store.claim(self.worker_id, count, queues, thorough=thorough)
            except (redis.RedisError, OSError) as exc:
                self._claimed_with(count, 0)
                outage_since = outage_since or time.monotonic()
                if self.burst and time.monotonic() - outage_since >= self.give_up_after:
                    logger.error(
                        "Worker %s: Redis of backend %r at %s unreachable for %.0fs (%s); a "
                        "burst worker gives up (exit code %d). Check that Redis is running and "
                        "LOCATION is right.",
                        self.worker_id, backend.alias, redacted(backend.config.location),
                        time.monotonic() - outage_since, exc, EXIT_UNREACHABLE,
                    )  # fmt: skip
                    self.exit_code = EXIT_UNREACHABLE
                    self._stop()
                    break
                logger.warning(
                    "Worker %s: Redis of backend %r failed (%s); retrying in %.1fs",
                    self.worker_id, backend.alias, exc, backoff,
                )  # fmt: skip
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if outage_since is not None:
                logger.info("Worker %s: Redis of backend %r is back", self.worker_id, backend.alias)
            backoff, outage_since = BACKOFF_MIN, None
            for key in batch.quarantined:
                logger.error("Backend %r: a key of the wrong type was moved aside to %r",
                             backend.alias, key)  # fmt: skip
            self._claimed_with(count, len(batch.claims))
            with self._leases_lock:  # renewed from now on, even before a task first runs
                self._leases[backend.alias].update((c.task_id, c.token) for c in batch.claims)
            # One task, found with the queues dry and nothing else running: no other finish is
            # coming to share its trip (see execution.CallThenSettle).
            alone = len(batch.claims) == 1 < count and not self._running
            for claim in batch.claims:
                job = asyncio.create_task(self._execute(backend, claim, alone))
                mine.add(job)
                self._running.add(job)
                job.add_done_callback(mine.discard)
                job.add_done_callback(self._running.discard)
            was_thorough, thorough = thorough, False
            if batch.claims and (self.burst or len(batch.claims) == count):
                continue
            if batch.claims:
                # The tasks just claimed start (a sync one's thread is woken) before this
                # consumer sets up its wait, which would otherwise hold the GIL first.
                await asyncio.sleep(0)
            # Fewer tasks than asked: the queues ran dry, so wait for the next enqueue (or due
            # time) rather than claim again at once for nothing.
            if self.burst:
                if not mine:
                    if was_thorough:
                        break
                    thorough = True
                    continue
                await asyncio.wait(mine, return_when=asyncio.FIRST_COMPLETED)
                continue
            timeout, precise = IDLE_WAIT_MAX, False
            if batch.next_due_ms is not None:
                due_in = max(batch.next_due_ms - batch.now_ms, 1) / 1000
                timeout, precise = min(timeout, due_in), due_in < IDLE_WAIT_MAX
            await self._wait_for_work(backend, timeout, precise)

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_work(self, backend: RedisBackend, timeout: float, precise: bool) -> None:
        """Block on the wake list until an enqueue, a stop, or ``timeout``. Redis times out
        blocked clients only every 1/hz seconds (100 ms by default), so a wait for a deferred
        task's due time is ended by a timer here instead (``precise``)."""
        assert self._stopping is not None
        server_timeout = timeout + 1 if precise else timeout
        waiter = asyncio.create_task(backend.store.wait_for_work(server_timeout))
        stopper = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait(
            {waiter, stopper},
            timeout=timeout if precise else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for pending in (waiter, stopper):
            if pending not in done:
                pending.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)
        if waiter in done and waiter.exception() is not None:
            # The next claim meets the same outage and backs off; pause briefly meanwhile.
            await self._sleep(BACKOFF_MIN)

    async def _schedule(self, backend: RedisBackend) -> None:
        """Enqueue the backend's periodic tasks as their ticks come (once across workers)."""
        scheduler = Scheduler(backend)
        if not self.run_scheduler or not scheduler.schedules:
            return
        backoff = BACKOFF_MIN
        while not self.stopping:
            try:
                wait = await asyncio.to_thread(scheduler.run_once)
                backoff = BACKOFF_MIN
            except (redis.RedisError, OSError) as exc:
                logger.warning("Scheduler of %r: Redis failed (%s)", backend.alias, exc)
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            except Exception:  # a failing receiver, say: log it, keep scheduling
                logger.exception("Scheduler of %r failed; retrying", backend.alias)
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            await self._sleep(min(wait, IDLE_WAIT_MAX))

    # --- running ------------------------------------------------------------------------

    async def _execute(self, backend: RedisBackend, claim: Claim, alone: bool = False) -> None:
        held = True

        def free_slot() -> None:
            """The task's body is over: its slot may take the next task while the outcome is
            stored, so that claim and finish share a trip to Redis (batching.py)."""
            nonlocal held
            if held:
                held = False
                self._release()

        try:
            try:
                result = execution.prepare(claim)
            except InvalidTaskPayload as exc:
                await execution.fail_unrunnable(backend, claim, exc)
                self.tasks_failed += 1
                return
            if execution.is_async(result):
                status = await execution.run_async(backend, claim, result, free_slot)
                self.tasks_failed += status == "FAILED"
            elif alone:
                status = await self._run_and_settle_in_thread(backend, claim, result)
                self.tasks_failed += status == "FAILED"
            else:
                status = await self._run_in_thread(backend, claim, result, free_slot)
                self.tasks_failed += status == "FAILED"
        except asyncio.CancelledError:
            # Shutdown after the grace period: back to the queue at once, not counted as a
            # failure. A sync task's thread runs on, but its late outcome will be rejected.
            await self._hand_back(backend, claim)
        except Exception:
            logger.exception(
                "Worker %s: could not store the outcome of task %s; its lease will return it",
                self.worker_id, claim.task_id,
            )  # fmt: skip
        finally:
            with self._leases_lock:
                self._leases[backend.alias].pop(claim.task_id, None)
            self.tasks_done += 1
            if self.on_task_done is not None:
                self.on_task_done()
            free_slot()

    async def _run_in_thread(
        self, backend: RedisBackend, claim: Claim, result: Any, body_done: Callable[[], None]
    ) -> str | None:
        """Run a sync task in the pool; return the status stored (None: retried or rejected).

        Only the task's body is timed. Its outcome is stored by ``_settle``: from the loop,
        where the finishes of many tasks share a trip to Redis."""
        assert self._threads is not None
        timeout = execution.timeout_of(backend, result)
        body = self._threads.submit(execution.call_sync, backend, result)
        try:
            outcome = await _within(body, timeout)
        except asyncio.CancelledError:
            self._abandon(body)  # shutdown: the task is handed back; its thread runs on
            raise
        except TimeoutError:
            outcome = self._timed_out(claim, body, timeout)
        body_done()
        return await self._settle(backend, claim, result, outcome)

    async def _run_and_settle_in_thread(
        self, backend: RedisBackend, claim: Claim, result: Any
    ) -> str | None:
        """``_run_in_thread`` for a task no other finish can share a trip with: the thread
        that runs the body stores its outcome too (``execution.CallThenSettle``)."""
        assert self._threads is not None
        timeout = execution.timeout_of(backend, result)
        call = execution.CallThenSettle(backend, claim, result)
        future = self._threads.submit(call)
        try:
            return await _within(future, timeout)
        except asyncio.CancelledError:
            call.give_up()
            self._abandon(future)  # shutdown: the task is handed back; its thread runs on
            raise
        except TimeoutError:
            if not call.give_up():  # the body ended in time; only its settling is slow
                return await future
            outcome = self._timed_out(claim, future, timeout)
        return await self._settle(backend, claim, result, outcome)

    async def _settle(
        self, backend: RedisBackend, claim: Claim, result: Any, outcome: execution.Outcome
    ) -> str | None:
        """Store a sync task's outcome from the loop, unless a ``task_finished`` receiver of
        the project's own is connected: then storing and the signal go to the pool, since such
        a receiver may block or use the database."""
        assert self._threads is not None
        if signalling.loop_safe(task_finished, type(backend)):
            return await execution.asettle(backend, claim, result, outcome)
        return await self._threads.submit(execution.settle, backend, claim, result, outcome)

    def _timed_out(
        self, claim: Claim, body: asyncio.Future[Any], timeout: float | None
    ) -> execution.Outcome:
        """Python cannot stop a thread: abandon it (its result is never stored) and record the
        timeout; the thread's slot goes. Too many abandoned threads stop the worker."""
        self._abandon(body)
        logger.error("Task %s ran past its %ss timeout; its thread is abandoned",
                     claim.task_id, timeout)  # fmt: skip
        if self.abandoned_threads > self.max_abandoned and not self.stopping:
            logger.error(
                "Worker %s: %d abandoned threads; stopping so that a fresh process "
                "takes over (exit code %d)",
                self.worker_id, self.abandoned_threads, EXIT_RESTART,
            )  # fmt: skip
            self.exit_code = EXIT_RESTART
            self._stop()
        return execution.timed_out(timeout or 0)

    def _abandon(self, future: asyncio.Future[Any]) -> None:
        assert self._threads is not None
        with self._abandoned_lock:  # counted first: the thread may return at once
            self.abandoned_threads += 1
        if not self._threads.abandon(future, self._thread_returned):
            self._thread_returned()  # it had returned already

    def _thread_returned(self) -> None:
        """Runs in the abandoned thread itself when its call returns at last."""
        with self._abandoned_lock:
            self.abandoned_threads -= 1

    async def _hand_back(self, backend: RedisBackend, claim: Claim) -> None:
        try:
            if await backend.store.arequeue(claim, handback=True):
                logger.info("Task %s handed back to its queue", claim.task_id)
        except (redis.RedisError, OSError) as exc:
            logger.warning("Task %s could not be handed back (%s); its lease will return it",
                           claim.task_id, exc)  # fmt: skip

    # --- leases -------------------------------------------------------------------------

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew leases and keep this worker's registry entry fresh, on its own connections."""
        clients = {b.alias: b.store.connections.new_sync() for b in self.backends}
        interval = min(b.config.lease_timeout for b in self.backends) / 3
        try:
            while True:
                for backend in self.backends:
                    client = clients[backend.alias]
                    with self._leases_lock:
                        leases = dict(self._leases[backend.alias])
                    try:  # leases first: they are what keeps tasks from running twice
                        lost = backend.store.renew(client, leases) if leases else []
                    except Exception as exc:
                        logger.warning("Worker %s: lease renewal failed: %s", self.worker_id, exc)
                        lost = []
                    try:
                        self._register(backend, client, list(leases), interval)
                    except Exception as exc:
                        logger.warning("Worker %s: registry update failed: %s", self.worker_id, exc)
                    with self._leases_lock:  # a task that finished meanwhile was not lost
                        held = self._leases[backend.alias]
                        lost = [t for t in lost if held.get(t) == leases[t]]
                    for task_id in lost:
                        logger.warning(
                            "Worker %s lost the lease of task %s; its outcome will be discarded",
                            self.worker_id,
                            task_id,
                        )
                if stop.wait(interval):
                    break
            for backend in self.backends:
                with contextlib.suppress(redis.RedisError):
                    backend.store.unregister_worker(clients[backend.alias], self.worker_id)
        finally:
            for client in clients.values():
                client.close()

    def _register(
        self, backend: RedisBackend, client: SyncClient, in_flight: list[str], interval: float
    ) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "backends": [b.alias for b in self.backends],
            "queues": self._queues_for(backend),
            "concurrency": self.concurrency,
            "in_flight": in_flight,
            "started_at": self.started_at,
            "done": self.tasks_done,
            "failed": self.tasks_failed,
        }
        backend.store.register_worker(client, self.worker_id, info, ttl=3 * interval)


async def _within(call: asyncio.Future[T], timeout: float | None) -> T:
    """A thread's call, awaited for at most ``timeout`` seconds (TimeoutError after it). The
    timeout must not cancel the call's future, which is shielded; with no timeout the future is
    awaited bare (no timer, no shield per task), and a cancel reaches it, which changes
    nothing: its thread runs on either way, and its late result is dropped (``_abandon``)."""
    if timeout is None:
        return await call
    return await asyncio.wait_for(asyncio.shield(call), timeout)
