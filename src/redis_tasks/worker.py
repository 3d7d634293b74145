"""The worker: one consumer loop per backend, a scheduler loop per backend, one stop event.

Shape (after SAQ and arq): a consumer reserves the free slots (``capacity.py``), claims that many
tasks in one script call, starts each (``execution.py``: async on the loop, sync in the worker's
threads), and when the queues are dry blocks on the backend's wake list until an enqueue or the
next deferred task's due time. Leases are renewed by a heartbeat thread (``leases.py``). A stop
ends claiming; running tasks then get the grace period, and those still running after it go
back to their queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from . import cancellation, execution, task_logs
from .capacity import Slots
from .connection import redacted
from .exceptions import InvalidTaskPayload
from .isolation import ChildPool
from .leases import Heartbeat, Leases
from .prefetch import RunGate
from .threads import TaskThreads
from .ticker import Ticker

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .calls import Claim

logger = logging.getLogger("redis_tasks")

IDLE_WAIT_MAX = 1.0  # seconds an idle consumer blocks before sweeping expired tasks and leases
# How long a claim that runs dry parks the worker for a hand-off at enqueue: past its longest
# wait, so it stays parked while it waits; a worker that died parked is a target this long.
PARK_MS = int(IDLE_WAIT_MAX * 1000) + 500
ROUSE_GRACE = 5.0  # seconds a wait ended by rouse() may take to return before it is cancelled
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
        prefetch: int = 0,
    ) -> None:
        if not backends:
            raise ValueError("a worker needs at least one RedisBackend")
        self.backends = list(backends)
        self.queues = list(queues)
        self.concurrency = concurrency
        self.prefetch = prefetch  # tasks claimed beyond the slots, waiting to start (prefetch.py)
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
        self.leases = Leases(b.alias for b in self.backends)
        self.slots: Slots | None = None  # made on the loop, by run()
        self._running: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Task[None]] = set()  # outcomes being stored
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: TaskThreads | None = None
        self._children = ChildPool()  # isolated tasks' processes
        self.cancels = cancellation.Requests()  # operators' cancels of running tasks
        self._jobs: dict[str, tuple[asyncio.Task[None], bool]] = {}  # id -> job, runs in a thread
        self._gate: RunGate | None = None  # with a prefetch: at most `concurrency` bodies at once
        self._at_gate: set[asyncio.Task[None]] = set()  # prefetched tasks waiting to start

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
        assert self._stopping is not None and self.slots is not None
        self._stopping.set()
        self.slots.close()

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    @property
    def recycled(self) -> bool:
        """Whether it stopped because --max-tasks was reached (not for a signal or an error):
        a supervisor then starts a fresh process in its place."""
        return self.slots is not None and self.slots.limit_reached and not self.exit_code

    @property
    def abandoned_threads(self) -> int:
        """Sync tasks past their timeout (or shutdown) whose thread still runs."""
        return 0 if self.slots is None else self.slots.abandoned_threads

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.slots = Slots(self.concurrency + self.prefetch, self.max_tasks, self.max_abandoned)
        self._gate = RunGate(self.concurrency) if self.prefetch else None
        # Room for the abandoned threads of timed-out sync tasks, so they cost no capacity.
        self._threads = TaskThreads(
            self._loop, self.concurrency + self.max_abandoned, name="redis-tasks"
        )
        heartbeat = Heartbeat(self.worker_id, self.backends, self.leases, self._info)
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
            consumers = [self._loop_task(self._consume(b)) for b in self.backends]
            timers = [self._loop_task(self._schedule(b)) for b in self.backends]
            listeners = [self._loop_task(self._listen_for_cancels(b)) for b in self.backends]
            await asyncio.gather(*consumers)
            self._stop()  # the consumers are done (a stop, --burst, --max-tasks): so are the timers
            await self._drain()  # the grace starts now, not once the timers have noticed
            for listener in listeners:  # waiting on Redis for up to a second: not worth it now
                listener.cancel()
            await asyncio.gather(*timers, *listeners, return_exceptions=True)
        finally:
            heartbeat.stop()
            await self._children.close()
            # Abandoned threads cannot be joined; the process exits without waiting for them.
            self._threads.shutdown(wait=self.abandoned_threads == 0)
            for backend in self.backends:
                await backend.store.connections.aclose()
        logger.info("Worker %s stopped after %d tasks", self.worker_id, self.tasks_done)

    def _loop_task(self, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """One of the worker's loops; one that fails stops the worker (with a log line)."""

        async def guarded() -> None:
            try:
                await loop
            except Exception:
                logger.exception("Worker %s: a loop failed; stopping", self.worker_id)
                self._stop()

        return asyncio.create_task(guarded())

    async def _drain(self) -> None:
        """Give running tasks the grace period, then hand back those whose body still runs.
        An outcome already computed is still this worker's: it goes on being stored (its
        retries are bounded by the lease), never handed back to run again."""
        if not self._running:
            return
        assert self.slots is not None
        grace = None if self.slots.limit_reached else self.grace
        if grace is not None:  # (at --max-tasks, what it claimed is its to run)
            for job in self._at_gate:  # prefetched, not started: back to their queues at once
                job.cancel()
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        bodies = pending - self._settling
        if bodies:
            logger.warning(
                "Worker %s: %d task(s) still running after the %ss grace period; "
                "handing them back to their queues",
                self.worker_id, len(bodies), self.grace,
            )  # fmt: skip
            for job in bodies:
                job.cancel()
        if pending:
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

    async def _consume(self, backend: RedisBackend) -> None:
        """Reserve, claim, start; wait when the queues run dry. Until stopped, or (burst) until
        nothing is due, or until --max-tasks tasks were claimed. A claim that runs dry parks the
        worker (lua/lib/parking.lua): an enqueue may then hand it a task, leased to it already,
        which its wait brings back without a claim's trip (a burst worker never parks)."""
        assert self.slots is not None
        store, queues, slots = backend.store, self._queues_for(backend), self.slots
        mine: set[asyncio.Task[None]] = set()
        backoff, outage_since = BACKOFF_MIN, None
        # The first claim, and a burst worker's last before it exits, sweep and check the
        # queue index now rather than at most every SWEEP_MS / RECONCILE_MS.
        thorough = True
        park_ms = None if self.burst else PARK_MS
        parked = False  # by its last claim: the next one unparks it and brings a task handed over
        while not self.stopping:
            count = await slots.reserve()
            if count == 0:
                if slots.limit_reached and not self.stopping:  # the other consumers stop too
                    self._stop()
                break
            try:
                batch = await store.claim(
                    self.worker_id, count, queues, thorough=thorough, park_ms=park_ms,
                    parked=parked,
                )  # fmt: skip
            except (redis.RedisError, OSError) as exc:
                slots.claimed(count, 0)
                outage_since = outage_since or time.monotonic()
                if self.burst and time.monotonic() - outage_since >= self.give_up_after:
                    self._give_up(backend, exc, time.monotonic() - outage_since)
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
            # Fewer tasks than asked: the queues ran dry, and (unless burst) the claim parked
            # the worker.
            parked = park_ms is not None and len(batch.claims) < count
            # Tasks handed over while it waited come first; any beyond the slots this claim
            # holds (a consumer of another backend took some meanwhile) go back.
            claims, extra = batch.claims[:count], batch.claims[count:]
            slots.claimed(count, len(claims))
            self._start(backend, claims, batch.received_at, mine)
            for claim in extra:
                await self._hand_back(backend, claim)
            was_thorough, thorough = thorough, False
            if batch.claims and (self.burst or len(batch.claims) >= count):
                continue
            if batch.claims:
                # The tasks just claimed start (a sync one's thread is woken) before this
                # consumer sets up its wait, which would otherwise hold the GIL first.
                await asyncio.sleep(0)
            # Wait for the next enqueue (or due time) rather than claim again at once for
            # nothing.
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
            room = count - len(batch.claims)  # tasks it may be handed while parked
            parked = await self._wait_parked(backend, timeout, precise, room, mine)
        if parked:
            await self._unpark(backend)

    async def _wait_parked(
        self,
        backend: RedisBackend,
        timeout: float,
        precise: bool,
        room: int,
        mine: set[asyncio.Task[None]],
    ) -> bool:
        """Wait, parked, for at most ``timeout``; start each task handed over meanwhile, and
        wait on (without a claim) while the park has room. Returns whether it is still
        parked (the next claim then unparks it); its last hand-off unparks it."""
        assert self.slots is not None
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            handed = await self._wait_for_work(backend, left, precise)
            if handed is None:  # an enqueue's token, the timeout, or a stop: claim again
                return True
            room -= 1
            if self.slots.take_one():
                self._start(backend, [handed], time.monotonic(), mine)
            else:  # stopping, or the worker's other consumers took the slots meanwhile
                await self._hand_back(backend, handed)
            if room <= 0 or self.stopping or time.monotonic() >= deadline:
                return room > 0
            await asyncio.sleep(0)  # the task starts (its thread is woken) before the wait

    def _start(
        self,
        backend: RedisBackend,
        claims: list[Claim],
        received_at: float,
        mine: set[asyncio.Task[None]],
    ) -> None:
        """Start claimed tasks: their leases are renewed from now on, each runs as a job."""
        if not claims:
            return
        self.leases.hold(backend.alias, claims)
        freshness = execution.Freshness(received_at, backend.config.lease_timeout / 3)
        for claim in claims:
            job = asyncio.create_task(self._execute(backend, claim, freshness))
            mine.add(job)
            self._running.add(job)
            job.add_done_callback(mine.discard)
            job.add_done_callback(self._running.discard)

    async def _unpark(self, backend: RedisBackend) -> None:
        """A stopping consumer leaves the parked list; a task handed to it meanwhile goes back
        to its queue (should Redis fail here, the lease returns it, and the park ends by
        itself within PARK_MS)."""
        try:
            for claim in await backend.store.unpark(self.worker_id):
                await self._hand_back(backend, claim)
        except (redis.RedisError, OSError) as exc:
            logger.warning("Worker %s: could not leave the parked list of %r (%s)",
                           self.worker_id, backend.alias, exc)  # fmt: skip

    def _give_up(self, backend: RedisBackend, exc: BaseException, seconds: float) -> None:
        logger.error(
            "Worker %s: Redis of backend %r at %s unreachable for %.0fs (%s); a burst worker "
            "gives up (exit code %d). Check that Redis is running and LOCATION is right.",
            self.worker_id, backend.alias, redacted(backend.config.location), seconds, exc,
            EXIT_UNREACHABLE,
        )  # fmt: skip
        self.exit_code = EXIT_UNREACHABLE
        self._stop()

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_work(
        self, backend: RedisBackend, timeout: float, precise: bool
    ) -> Claim | None:
        """Block on the inbox and the wake list until an enqueue, a stop, or ``timeout``;
        return a task handed over meanwhile. Redis times out blocked clients only every 1/hz
        seconds (100 ms by default), so a wait for a deferred task's due time is ended by a
        timer here instead (``precise``). A wait is ended early by a blank entry in the
        inbox (``rouse``), never by cancelling it: Redis may have taken a handed task off the
        inbox for a reply that a cancel would drop."""
        assert self._stopping is not None
        store = backend.store
        server_timeout = timeout + 1 if precise else timeout
        waiter = asyncio.create_task(store.wait_for_work(self.worker_id, server_timeout))
        stopper = asyncio.create_task(self._stopping.wait())
        await asyncio.wait(
            {waiter, stopper},
            timeout=timeout if precise else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopper.cancel()
        if not waiter.done():
            try:
                await store.rouse(self.worker_id)
                await asyncio.wait({waiter}, timeout=ROUSE_GRACE)
            except (redis.RedisError, OSError):  # unreachable: nothing can be handed over now
                pass
            waiter.cancel()  # (done by now, unless Redis is unreachable)
        await asyncio.gather(waiter, stopper, return_exceptions=True)
        if waiter.cancelled():
            return None
        if waiter.exception() is not None:
            # The next claim meets the same outage and backs off; pause briefly meanwhile.
            await self._sleep(BACKOFF_MIN)
            return None
        return waiter.result()

    async def _schedule(self, backend: RedisBackend) -> None:
        """Enqueue the backend's periodic tasks as their ticks come (once across workers)."""
        ticker = Ticker(backend)
        if not self.run_scheduler or not ticker.schedules:
            return
        backoff = BACKOFF_MIN
        while not self.stopping:
            try:
                wait = await asyncio.to_thread(ticker.run_once)
                backoff = BACKOFF_MIN
            except (redis.RedisError, OSError) as exc:
                logger.warning("Scheduler of %r: Redis failed (%s)", backend.alias, exc)
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            except Exception:  # a failing receiver, say: log it, keep scheduling
                logger.exception("Scheduler of %r failed; retrying", backend.alias)
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            await self._sleep(min(wait, IDLE_WAIT_MAX))

    # --- running ------------------------------------------------------------------------

    async def _execute(
        self, backend: RedisBackend, claim: Claim, freshness: execution.Freshness
    ) -> None:
        """Run one claimed task and settle its outcome. Its slot is free again as soon as its
        body is over, so that the next claim rides in one trip with this finish."""
        assert self.slots is not None and self._threads is not None
        job = asyncio.current_task()
        assert job is not None
        started = False
        try:
            try:
                result = execution.prepare(backend, claim)
                task_logs.enter(result)  # this job's context: its log lines name the task
                if self._gate is not None:
                    await self._wait_to_start(claim, result, job, self._gate)
                    started = True
                if execution.isolate(backend, result):
                    self._jobs[claim.task_id] = (job, False)
                    outcome = await execution.run_isolated(
                        backend, claim, result, freshness, self._children
                    )
                elif execution.is_async(result):
                    self._jobs[claim.task_id] = (job, False)
                    outcome = await execution.run_async(backend, claim, result, freshness)
                else:
                    self._jobs[claim.task_id] = (job, True)
                    cancel = self.cancels.event_for(claim.task_id)
                    outcome = await execution.run_sync(
                        backend, claim, result, freshness, self._threads, self.slots, cancel
                    )
                    self._restart_if_too_many_abandoned()
            finally:
                self.slots.release()
                if started and self._gate is not None:
                    self._gate.leave()
            if outcome.status == execution.DROPPED:
                logger.warning(
                    "Task %s was claimed before this worker was paused past its lease; another "
                    "attempt owns it now, so it was dropped unrun", claim.task_id,
                )  # fmt: skip
                return
            if self.cancels.requested(claim.task_id):  # it ran to its end anyway
                outcome = execution.cancelled()
            # The outcome is this worker's to store, even at shutdown: never handed back now.
            self._settling.add(job)
            status = await execution.settle(backend, claim, result, outcome)
            self.tasks_failed += status == "FAILED"
        except InvalidTaskPayload as exc:
            await execution.fail_unrunnable(backend, claim, exc)
            self.tasks_failed += 1
        except asyncio.CancelledError:
            if self.cancels.requested(claim.task_id) and job.uncancel() == 0:
                # An operator's cancel, not a shutdown: the task ends FAILED, TaskCancelled.
                self._settling.add(job)
                await execution.settle(backend, claim, result, execution.cancelled())
                self.tasks_failed += 1
            else:
                # Shutdown after the grace period: back to the queue at once, not counted as
                # a failure. A sync task's thread runs on, but its late outcome is dropped.
                await self._hand_back(backend, claim)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            # Redis stayed away longer than the lease could hold (or the worker was paused
            # meanwhile): expected under outages, so a line, not a traceback.
            logger.warning(
                "Worker %s: could not store the outcome of task %s (%s); its lease will "
                "return it", self.worker_id, claim.task_id, exc,
            )  # fmt: skip
        except Exception:
            logger.exception(
                "Worker %s: could not store the outcome of task %s; its lease will return it",
                self.worker_id, claim.task_id,
            )  # fmt: skip
        finally:
            self._settling.discard(job)
            self._jobs.pop(claim.task_id, None)
            self.cancels.forget(claim.task_id)
            self.leases.drop(backend.alias, claim.task_id)
            self.tasks_done += 1
            if self.on_task_done is not None:
                self.on_task_done()

    async def _wait_to_start(
        self, claim: Claim, result: Any, job: asyncio.Task[None], gate: RunGate
    ) -> None:
        """A prefetched task waits for one of the ``concurrency`` places to run (best
        priority first); an operator's cancel, or a stop, ends its wait, unrun."""
        self._jobs[claim.task_id] = (job, False)
        self._at_gate.add(job)
        try:
            await gate.enter(int(result.task.priority))
        finally:
            self._at_gate.discard(job)

    async def _listen_for_cancels(self, backend: RedisBackend) -> None:
        """Operators' cancels of tasks this worker runs, as they come (within about a second:
        the wait is renewed every second, and a stop ends it)."""
        backoff = BACKOFF_MIN
        while not self.stopping:
            try:
                task_id = await backend.store.next_cancel(self.worker_id, 1.0)
                backoff = BACKOFF_MIN
            except (redis.RedisError, OSError):  # the consumer reports outages
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if task_id is not None:
                self._cancel(task_id)

    def _cancel(self, task_id: str) -> None:
        self.cancels.request(task_id)  # a sync task sees it at its next check
        found = self._jobs.get(task_id)
        if found is not None and not found[1]:  # an async or isolated task: cancelled now
            logger.info("Task %s cancelled by an operator", task_id)
            found[0].cancel()

    def _restart_if_too_many_abandoned(self) -> None:
        """Too many threads of timed-out sync tasks still run: stop, so that a fresh process
        takes over (exit code 3 asks the supervisor for one)."""
        assert self.slots is not None
        if self.slots.abandoned_threads > self.slots.max_abandoned and not self.stopping:
            logger.error(
                "Worker %s: %d abandoned threads; stopping so that a fresh process "
                "takes over (exit code %d)",
                self.worker_id, self.slots.abandoned_threads, EXIT_RESTART,
            )  # fmt: skip
            self.exit_code = EXIT_RESTART
            self._stop()

    async def _hand_back(self, backend: RedisBackend, claim: Claim) -> None:
        try:
            if await backend.store.arequeue(claim, handback=True):
                logger.info("Task %s handed back to its queue", claim.task_id)
        except (redis.RedisError, OSError) as exc:
            logger.warning("Task %s could not be handed back (%s); its lease will return it",
                           claim.task_id, exc)  # fmt: skip

    def _info(self, backend: RedisBackend, in_flight: list[str]) -> dict[str, Any]:
        """What the registry shows of this worker (``redis_tasks status``, the dashboard)."""
        return {
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
