"""Fault injection: real worker processes and real Redis servers, killed, paused and cut off.

Every test checks what happened against an independent record: an append-only journal that the
task itself writes (`start <key> <pid>` / `end <key> <pid>`), not Redis. What is checked:
no task lost, exactly one stored outcome each, and stored attempts matching the real starts.
A claim records its attempt atomically, a moment before the task function writes `start`; a
SIGKILL in between leaves an attempt without a start, so attempts may exceed starts by at most
the claims a kill can interrupt (kills x concurrency). Stored attempts are never fewer.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus, task_backends, task_enqueued
from redis_tasks.exceptions import BackendUnavailable
from redis_tasks.keys import Keys
from tests import tasks
from tests.helpers import child_env, manage, ran_under, stop_processes, wait_until
from tests.redis_server import RedisServer, free_port

LEASE = "1"
# A longer soak: REDIS_TASKS_SOAK=20 (12,000 tasks, 160 kills); see docs/reliability.md.
SOAK = int(os.environ.get("REDIS_TASKS_SOAK", "1"))


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a line cut short by SIGKILL is not a start
                out.append((parts[0], parts[1], int(parts[2])))
        return out

    def count(self, kind: str) -> Counter[str]:
        return Counter(key for k, key, _ in self.lines() if k == kind)

    def pids(self, kind: str, key: str) -> list[int]:
        return [pid for k, name, pid in self.lines() if k == kind and name == key]


class Workers:
    """Worker processes with their output in files (no pipe can fill up and block them)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.env = child_env(REDIS_TASKS_TEST_LEASE=LEASE, **env)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = manage("redis_tasks_worker", *args, env=self.env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return (self.tmp_path / f"worker-{self.procs.index(proc)}.log").read_text()

    def stop_all(self) -> None:
        stop_processes(self.procs)


@pytest.fixture(autouse=True)
def no_maxsize(settings: Any) -> None:
    """These tests queue hundreds of tasks at once."""
    settings.TASKS = {**settings.TASKS, "default": {**settings.TASKS["default"], "maxsize": None}}


@pytest.fixture
def workers(tmp_path: Path) -> Any:
    made: list[Workers] = []

    def make(**env: str) -> Workers:
        made.append(Workers(tmp_path, **env))
        return made[-1]

    yield make
    for w in made:
        w.stop_all()


def refreshed(result: Any, backend: RedisBackend | None = None) -> Any:
    if backend is None:
        result.refresh()
        return result
    return backend.get_result(result.id)


def assert_no_leftovers(client: redis.Redis, namespace: str = "task_queue") -> None:
    k = Keys(namespace)
    assert client.zcard(k.running) == 0
    assert client.zcard(k.ready("default")) == 0
    assert client.zcard(k.deferred("default")) == 0


def test_sigkill_storm_loses_nothing(
    tmp_path: Path, workers: Any, clean_redis: redis.Redis
) -> None:
    journal = Journal(tmp_path / "journal")
    results = {
        f"t{i}": tasks.journal.enqueue(str(journal.path), f"t{i}", 0.05) for i in range(600 * SOAK)
    }
    pool = workers(REDIS_TASKS_TEST_MAX_ATTEMPTS="100")
    procs = [pool.start("--concurrency", "50") for _ in range(3)]  # up to 150 in flight
    rng = random.Random(42)
    kills = 0
    for _ in range(8 * SOAK):
        seen = len(journal.lines())
        wait_until(lambda seen=seen: len(journal.lines()) >= seen + 60, timeout=30)
        victim = rng.randrange(len(procs))
        procs[victim].kill()  # SIGKILL with tasks in flight
        procs[victim].wait()
        kills += 1
        procs[victim] = pool.start("--concurrency", "50")

    def all_finished() -> bool:
        return all(refreshed(r).is_finished for r in results.values())

    wait_until(all_finished, timeout=90 * SOAK)
    starts, ends = journal.count("start"), journal.count("end")
    extra_attempts = 0
    for key, result in results.items():
        assert result.status == TaskResultStatus.SUCCESSFUL, (key, result.errors)
        assert result.return_value == key
        assert starts[key] >= 1 and ends[key] >= 1, key
        assert result.attempts >= starts[key], (key, result.attempts, starts[key])
        extra_attempts += result.attempts - starts[key]
        lost = [e.exception_class_path for e in result.errors]
        assert lost == ["redis_tasks.exceptions.WorkerLost"] * (result.attempts - 1)
    assert extra_attempts <= kills * 50
    assert sum(starts.values()) > len(results), (
        "no kill hit a running task; the test proved nothing"
    )
    assert_no_leftovers(clean_redis)


def test_paused_worker_loses_its_lease_and_its_late_finish_is_rejected(
    tmp_path: Path, workers: Any
) -> None:
    journal = Journal(tmp_path / "journal")
    result = tasks.journal.enqueue(str(journal.path), "slow", 0.5)
    pool = workers()
    paused = pool.start("--concurrency", "1")
    wait_until(lambda: journal.count("start")["slow"] == 1)
    paused.send_signal(signal.SIGSTOP)  # past the lease: another worker takes over
    rescuer = pool.start("--concurrency", "1")
    wait_until(lambda: refreshed(result).status == TaskResultStatus.SUCCESSFUL, timeout=30)
    finished_at, workers_seen = result.finished_at, list(result.worker_ids)
    paused.send_signal(signal.SIGCONT)
    wait_until(lambda: "outcome discarded" in pool.log(paused), timeout=30)
    result.refresh()
    assert result.finished_at == finished_at and result.worker_ids == workers_seen
    assert [int(w.split(":")[1]) for w in result.worker_ids] == [paused.pid, rescuer.pid]
    # The second attempt ran in a child process of the rescuer (its first was lost).
    assert [ran_under(p) for p in journal.pids("start", "slow")] == [paused.pid, rescuer.pid]
    ends = [ran_under(p) for p in journal.pids("end", "slow")]
    assert ends == [rescuer.pid, paused.pid]  # both ran to the end
    assert [e.exception_class_path for e in result.errors] == ["redis_tasks.exceptions.WorkerLost"]


def test_poison_task_fails_after_max_attempts(tmp_path: Path, workers: Any) -> None:
    journal = Journal(tmp_path / "journal")
    poison = tasks.crash_worker.enqueue(str(journal.path))
    fine = tasks.add.using(priority=-1).enqueue(1, 1)
    pool = workers()

    def supervise() -> bool:  # restart crashed workers, as systemd or Kubernetes would
        live = [p for p in pool.procs if p.poll() is None]
        if not live:
            pool.start("--concurrency", "1")
        return refreshed(poison).is_finished

    wait_until(supervise, timeout=60, every=0.05)
    assert poison.status == TaskResultStatus.FAILED
    assert poison.attempts == 3 == journal.count("start")["crash"]
    # It killed its worker once; its next attempts ran in child processes of their own.
    assert [p.returncode for p in pool.procs if p.poll() is not None] == [13]
    assert poison.errors[0].exception_class_path == "redis_tasks.exceptions.WorkerLost"
    assert "stopped renewing its lease" in poison.errors[0].traceback
    assert poison.errors[-1].exception_class_path == "redis_tasks.exceptions.ChildProcessDied"
    assert "exit code 13" in poison.errors[-1].traceback
    wait_until(lambda: refreshed(fine).is_finished)
    assert fine.return_value == 2


@pytest.mark.parametrize("grace", ["0.3", "30"])
def test_sigterm_hands_back_or_finishes_within_the_grace(
    tmp_path: Path, workers: Any, grace: str
) -> None:
    journal = Journal(tmp_path / "journal")
    result = tasks.journal.enqueue(str(journal.path), "job", 1.0)
    pool = workers()
    worker = pool.start("--concurrency", "1", "--grace", grace)
    wait_until(lambda: journal.count("start")["job"] == 1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    result.refresh()
    if grace == "30":
        assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1
        return
    # Handed back at once, not after a lease timeout, and not counted as a failure.
    assert result.status == TaskResultStatus.READY and result.errors == []
    assert journal.count("end")["job"] == 0
    again = pool.start("--burst")
    assert again.wait(30) == 0
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.errors == []
    assert result.attempts == 2 == journal.count("start")["job"]


def test_several_workers_never_run_a_task_twice(
    tmp_path: Path, workers: Any, clean_redis: redis.Redis
) -> None:
    journal = Journal(tmp_path / "journal")
    results = [tasks.journal.enqueue(str(journal.path), f"t{i}") for i in range(600)]
    pool = workers()
    procs = [pool.start("--burst", "--concurrency", "8") for _ in range(4)]
    for proc in procs:
        assert proc.wait(60) == 0
    starts = journal.count("start")
    assert set(starts.values()) == {1} and len(starts) == 600
    assert all(refreshed(r).attempts == 1 for r in results)
    assert len({pid for _, _, pid in journal.lines()}) > 1, "only one worker ran anything"
    assert_no_leftovers(clean_redis)


def test_worker_rides_out_a_redis_crash_with_aof(tmp_path: Path, workers: Any) -> None:
    port = free_port()
    server = RedisServer(port, None, "--appendonly", "yes", "--appendfsync", "always").start()
    backend = RedisBackend(
        "default", {"BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{port}/12",
                    "queue_name": "task_queue", "lease_timeout": float(LEASE)},
    )  # fmt: skip
    journal = Journal(tmp_path / "journal")
    try:
        results = [
            backend.enqueue(tasks.journal, [str(journal.path), f"t{i}", 0.01], {})
            for i in range(200)
        ]
        pool = workers(REDIS_TASKS_TEST_PORT=str(port))
        worker = pool.start("--concurrency", "5")
        wait_until(lambda: len(journal.count("end")) >= 40)
        server.kill()  # SIGKILL Redis mid-run
        # Down until the consumer's claim meets the outage: restarted at once, Redis can be
        # back before any claim is tried (every slot busy storing a finish, which retries).
        wait_until(lambda: "Redis of backend 'default' failed" in pool.log(worker))
        server.start()  # same port, same directory: the AOF is replayed
        wait_until(lambda: all(backend.get_result(r.id).is_finished for r in results), timeout=60)
        assert worker.poll() is None, "the worker had to be restarted"
        starts = journal.count("start")
        for r in results:
            stored = backend.get_result(r.id)
            assert stored.status == TaskResultStatus.SUCCESSFUL
            assert stored.attempts >= starts[stored.args[1]] >= 1
    finally:
        server.stop()


class LocalProxy:
    """A TCP proxy on a free local port in front of Redis; each client is served by
    ``handle`` in a thread of its own."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class CuttingProxy(LocalProxy):
    """Forwards a client to Redis, then cuts the link at a script call: before Redis sees it,
    or after Redis ran it but before the reply reaches the client. Every script call is cut,
    or only the first ``cuts`` of them."""

    def __init__(self, target_port: int, deliver: bool, cuts: int | None = None) -> None:
        self.deliver = deliver
        self.cuts_left = cuts
        self.lock = threading.Lock()
        super().__init__(target_port)

    def _cut_this_one(self) -> bool:
        with self.lock:
            if self.cuts_left is None:
                return True
            self.cuts_left -= 1
            return self.cuts_left >= 0

    def handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with client, upstream:
            while data := client.recv(65536):
                script_call = b"EVALSHA" in data.upper() or b"\r\nEVAL\r\n" in data.upper()
                cut = script_call and self._cut_this_one()
                if cut and not self.deliver:
                    return  # cut before Redis sees the call
                upstream.sendall(data)
                reply = upstream.recv(65536)
                if cut and not reply.startswith(b"-NOSCRIPT"):
                    return  # Redis ran it; the reply is lost
                client.sendall(reply)


@pytest.mark.parametrize("deliver", [False, True], ids=["cut-before", "cut-after"])
def test_a_cut_in_the_middle_of_an_enqueue_leaves_nothing_half_written(
    redis_server: RedisServer, clean_redis: redis.Redis, deliver: bool
) -> None:
    proxy = CuttingProxy(redis_server.port, deliver)
    try:
        backend = RedisBackend(
            "default", {"BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{proxy.port}/12",
                        "queue_name": "task_queue"},
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            backend.enqueue(tasks.add, [1, 2], {})
        assert time.monotonic() - started < 3
        # Either way the client cannot know whether Redis ran the script, and says so.
        assert "may or may not have been applied" in str(caught.value)
    finally:
        proxy.close()
    k = Keys("task_queue")
    task_keys = clean_redis.keys(k.task("*"))
    ready = clean_redis.zrange(k.ready("default"), 0, -1)
    if deliver:  # the script ran wholly: the task is complete and queued
        assert len(task_keys) == 1 and len(ready) == 1
        assert task_keys[0].decode().endswith(ready[0].decode())
    else:
        assert task_keys == [] and ready == []


@pytest.mark.parametrize("lanes", [True, False], ids=["direct lane", "redis-py's path"])
def test_an_enqueue_sent_again_after_a_lost_reply_is_queued_once(
    redis_server: RedisServer, clean_redis: redis.Redis, lanes: bool
) -> None:
    """With a retry policy, redis-py sends a command again when its reply is lost. The enqueue
    script then meets the task it queued the first time: that is the answer, not a conflict."""
    proxy = CuttingProxy(redis_server.port, deliver=True, cuts=1)
    received: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        received.append(task_result)

    task_enqueued.connect(receiver)
    try:
        backend = RedisBackend("default", {
            "BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{proxy.port}/12",
            "queue_name": "task_queue", "direct_lanes": lanes,
            "connection_options": {"retry": Retry(NoBackoff(), 2),
                                   "retry_on_error": [redis.ConnectionError]},
        })  # fmt: skip
        result = backend.enqueue(tasks.add, [1, 2], {})
        assert proxy.cuts_left is not None and proxy.cuts_left <= 0, "no reply was cut"
        stored = backend.get_result(result.id)
    finally:
        task_enqueued.disconnect(receiver)
        proxy.close()
    assert stored.status == TaskResultStatus.READY and stored.args == [1, 2]
    assert result.enqueued_at == stored.enqueued_at  # read back: the first send's time
    assert [r.id for r in received] == [result.id]  # announced once, as queued by this call
    k = Keys("task_queue")
    assert clean_redis.keys(k.task("*")) == [k.task(result.id).encode()]
    assert clean_redis.zrange(k.ready("default"), 0, -1) == [result.id.encode()]


def test_an_id_taken_by_another_task_is_refused(clean_redis: redis.Redis) -> None:
    from redis_tasks.calls import EnqueueRequest

    store = task_backends["default"].store
    first = EnqueueRequest("a" * 32, "default", 0, "tests.tasks.add", "[1,2]", "{}", None)
    store.enqueue([first])
    assert store.enqueue([first]).existing == ["a" * 32]  # the same call again: itself
    with pytest.raises(BackendUnavailable, match="taken by another task"):
        store.enqueue([first._replace(args_json="[3,4]")])
    assert clean_redis.zcard(Keys("task_queue").ready("default")) == 1


class DroppingProxy(LocalProxy):
    """A link to Redis that can be cut: while cut, bytes either way are dropped and nothing is
    closed, like a network partition (the worker only sees silence and timeouts)."""

    def __init__(self, target_port: int) -> None:
        self.cut = threading.Event()
        super().__init__(target_port)

    def handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.cut.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_a_worker_cut_off_from_redis_loses_its_task_and_resumes(
    tmp_path: Path, workers: Any, redis_server: RedisServer
) -> None:
    proxy = DroppingProxy(redis_server.port)
    journal = Journal(tmp_path / "journal")
    try:
        result = tasks.journal.enqueue(str(journal.path), "cut", 2.0)
        behind_proxy = workers(REDIS_TASKS_TEST_PORT=str(proxy.port))
        cut_off = behind_proxy.start("--concurrency", "1")
        wait_until(lambda: journal.pids("start", "cut") == [cut_off.pid])
        proxy.cut.set()  # partition: the worker can neither renew its lease nor finish
        direct = workers()
        rescuer = direct.start("--concurrency", "1")
        wait_until(lambda: refreshed(result).status == TaskResultStatus.SUCCESSFUL, timeout=30)
        assert [int(w.split(":")[1]) for w in result.worker_ids] == [cut_off.pid, rescuer.pid]
        # The second attempt ran in a child process of the rescuer (its first was lost).
        wait_until(lambda: sorted(map(ran_under, journal.pids("end", "cut")))
                   == sorted([rescuer.pid, cut_off.pid]))  # fmt: skip
        proxy.cut.clear()  # the link comes back
        rescuer.send_signal(signal.SIGTERM)
        assert rescuer.wait(30) == 0
        after = tasks.add.enqueue(2, 2)  # only the cut-off worker is left to run it
        wait_until(lambda: refreshed(after).is_finished, timeout=40)
        assert after.return_value == 4 and int(after.worker_ids[0].split(":")[1]) == cut_off.pid
        assert cut_off.poll() is None, "the worker had to be restarted"
        final = refreshed(result)  # its late outcome never replaced the rescuer's
        assert final.status == TaskResultStatus.SUCCESSFUL and final.worker_ids == result.worker_ids
        assert [e.exception_class_path for e in final.errors] == [
            "redis_tasks.exceptions.WorkerLost"
        ]
    finally:
        proxy.close()


def test_a_finish_or_requeue_sent_again_is_answered_as_the_first_send(
    clean_redis: redis.Redis,
) -> None:
    """A retried send of a finish (or requeue) whose reply was lost finds the outcome its own
    lease stored: the same answer, nothing changed; a stale lease's finish is still refused."""
    import asyncio

    store = task_backends["default"].store
    first, second = tasks.add.enqueue(1, 2), tasks.add.enqueue(3, 4)

    async def main() -> list[int]:
        batch = await store.claim("w", 2)
        done, back = sorted(batch.claims, key=lambda c: c.task_id != first.id)
        answers = [await store.afinish(done, "SUCCESSFUL", "3"),
                   await store.afinish(done, "SUCCESSFUL", "3"),  # sent again
                   await store.afinish(done, "FAILED", None, '["x","y"]'),  # not what was stored
                   await store.arequeue(back, 0.0, None),
                   await store.arequeue(back, 0.0, None)]  # sent again  # fmt: skip
        lost = store.renew(store.connections.sync, {done.task_id: done.token,
                                                    back.task_id: back.token})  # fmt: skip
        again = await store.claim("w", 1)  # the requeued task, on its second attempt
        answers.append(await store.afinish(back, "SUCCESSFUL", "7"))  # the first lease: stale
        answers.append(await store.afinish(again.claims[0], "SUCCESSFUL", "7"))
        await store.connections.aclose()
        assert lost == []
        return answers

    finished, repeated, other, due, due_again, stale, fresh = asyncio.run(main())
    assert finished > 0 and repeated == finished and other == 0
    assert due > 0 and due_again > 0 and stale == 0 and fresh > 0
    assert tasks.add.get_result(first.id).return_value == 3
    assert tasks.add.get_result(second.id).return_value == 7


def test_a_maybe_applied_enqueue_is_retried_safely_with_the_same_id(
    redis_server: RedisServer, clean_redis: redis.Redis
) -> None:
    """No retry policy: the caller is told the enqueue may have been applied, and retry()
    sends the same call again, which finds the task it queued instead of queueing another."""
    proxy = CuttingProxy(redis_server.port, deliver=True, cuts=1)
    try:
        backend = RedisBackend("default", {
            "BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{proxy.port}/12",
            "queue_name": "task_queue", "connection_options": {"retry": Retry(NoBackoff(), 0)},
        })  # fmt: skip
        with pytest.raises(BackendUnavailable, match="may or may not") as caught:
            backend.enqueue(tasks.add, [1, 2], {})
        assert caught.value.maybe_applied and len(caught.value.task_ids) == 1
        [result] = caught.value.retry()
    finally:
        proxy.close()
    assert result.id == caught.value.task_ids[0]
    k = Keys("task_queue")
    assert clean_redis.zrange(k.ready("default"), 0, -1) == [result.id.encode()]


def test_redis_loading_its_data_is_reported_as_nothing_changed() -> None:
    error = task_backends["default"].store.unavailable(
        redis.BusyLoadingError("Redis is loading the dataset in memory")
    )
    assert "loading its data" in str(error) and "Nothing was changed" in str(error)
    assert not error.maybe_applied


def test_an_outcome_computed_during_the_grace_is_stored_not_handed_back(
    tmp_path: Path, workers: Any, clean_redis: redis.Redis
) -> None:
    """SIGTERM, then Redis stalls: the body ends within the grace but its outcome cannot be
    stored before the grace runs out. It is still the worker's to store; handing the task back
    would run finished work again."""
    journal = Journal(tmp_path / "journal")
    result = tasks.journal.enqueue(str(journal.path), "job", 0.5)
    pool = workers()
    pool.env["REDIS_TASKS_TEST_LEASE"] = "30"
    worker = pool.start("--concurrency", "1", "--grace", "0.8")
    wait_until(lambda: journal.count("start")["job"] == 1)
    clean_redis.execute_command("CLIENT", "PAUSE", "2500", "WRITE")  # writes wait 2.5 s
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, pool.log(worker)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1
    assert journal.count("end")["job"] == 1 and "handing them back" not in pool.log(worker)


def test_a_claim_that_waited_past_its_lease_is_dropped_unrun(clean_redis: redis.Redis) -> None:
    """A worker paused between its claim and the start of the body (SIGSTOP, a frozen VM) asks
    Redis before it runs a claim older than a third of the lease, and runs nothing whose lease
    was taken meanwhile."""
    import asyncio
    import time as clock

    from redis_tasks import execution
    from redis_tasks.capacity import Slots
    from redis_tasks.threads import TaskThreads

    backend = task_backends["default"]
    store = backend.store
    ran = [tasks.add.enqueue(1, 2), tasks.async_add.enqueue(3, 4)]
    taken = [tasks.add.enqueue(5, 6), tasks.async_add.enqueue(7, 8)]

    async def main() -> list[str]:
        batch = await store.claim("paused-worker", 4)
        claims = {c.task_id: c for c in batch.claims}
        for r in taken:  # as another worker's claim, after the lease expired, would leave it
            clean_redis.hset(Keys("task_queue").task(r.id), "owner", "99")
        old = execution.Freshness(clock.monotonic() - 100, 10.0)
        threads = TaskThreads(asyncio.get_running_loop(), 2, "test")
        statuses = []
        try:
            for r in [*ran, *taken]:
                claim = claims[r.id]
                result = execution.prepare(backend, claim)
                if execution.is_async(result):
                    outcome = await execution.run_async(backend, claim, result, old)
                else:
                    outcome = await execution.run_sync(
                        backend, claim, result, old, threads, Slots(2)
                    )
                statuses.append(outcome.status)
        finally:
            threads.shutdown(wait=True)
            await store.connections.aclose()
        return statuses

    assert asyncio.run(main()) == ["SUCCESSFUL", "SUCCESSFUL", "DROPPED", "DROPPED"]


def test_a_poison_task_takes_no_bystander_with_it(tmp_path: Path, workers: Any) -> None:
    """A task that kills its worker, claimed with nine innocent ones: the ten come back lost,
    and each runs its next attempt in a child process of its own. The innocents succeed; only
    the poison uses up its attempts."""
    journal = Journal(tmp_path / "journal")
    poison = tasks.crash_worker.enqueue(str(journal.path))
    innocents = [tasks.journal.enqueue(str(journal.path), f"innocent-{i}", 0.2) for i in range(20)]
    pool = workers()

    def supervise() -> bool:  # restart crashed workers, as systemd or Kubernetes would
        if not [p for p in pool.procs if p.poll() is None]:
            pool.start("--concurrency", "10")
        return refreshed(poison).is_finished and all(refreshed(r).is_finished for r in innocents)

    wait_until(supervise, timeout=90, every=0.05)
    assert poison.status == TaskResultStatus.FAILED and poison.attempts == 3
    assert [e.exception_class_path for e in poison.errors] == [
        "redis_tasks.exceptions.WorkerLost",
        "redis_tasks.exceptions.ChildProcessDied",
        "redis_tasks.exceptions.ChildProcessDied",
    ]
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in innocents), [
        (r.status, r.errors) for r in innocents
    ]
    lost_with_it = [r for r in innocents if r.errors]
    assert lost_with_it, "the poison killed no bystander: the test proved nothing"
    assert all(r.attempts == 2 for r in lost_with_it)
    assert [p.returncode for p in pool.procs if p.poll() is not None] == [13]  # one worker died
