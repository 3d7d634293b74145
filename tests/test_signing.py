"""Signed payloads (sign_payloads): a forged, an altered and an unsigned task are never run,
fail with InvalidSignature and go to the dead-letter set; keys rotate through
SECRET_KEY_FALLBACKS."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import TaskResultStatus, task_backends
from redis_tasks.keys import Keys
from tests import tasks
from tests.helpers import burst

SIGNED = Keys("signed")


def ran(result: Any) -> Any:
    burst("signed")
    result.refresh()
    return result


def assert_refused(result: Any, clean_redis: redis.Redis, reason: str) -> None:
    assert result.status == TaskResultStatus.FAILED, result.errors
    assert result.errors[-1].exception_class_path == "redis_tasks.exceptions.InvalidSignature"
    assert reason in result.errors[-1].traceback
    assert clean_redis.zscore(SIGNED.dead, result.id) is not None


def test_a_signed_task_runs(clean_redis: redis.Redis) -> None:
    result = tasks.add.using(backend="signed").enqueue(1, 2)
    assert clean_redis.hget(SIGNED.task(result.id), "sig")
    assert ran(result).return_value == 3


def test_an_altered_task_is_refused(clean_redis: redis.Redis) -> None:
    result = tasks.echo.using(backend="signed").enqueue("harmless")
    clean_redis.hset(SIGNED.task(result.id), "args", '["rm -rf /"]')
    assert_refused(ran(result), clean_redis, "do not match")


def test_a_task_signed_with_another_key_is_refused(clean_redis: redis.Redis, settings: Any) -> None:
    settings.SECRET_KEY = "an attacker's guess"
    forged = tasks.add.using(backend="signed").enqueue(1, 2)
    settings.SECRET_KEY = "tests-only"
    assert_refused(ran(forged), clean_redis, "do not match")


def test_an_unsigned_task_is_refused(clean_redis: redis.Redis, settings: Any) -> None:
    # Written by something that can reach Redis but has no key: the same namespace, unsigned.
    writer = RedisBackend("signed", {**settings.TASKS["signed"], "sign_payloads": False})
    unsigned = writer.enqueue(tasks.add, [1, 2], {})
    result = task_backends["signed"].get_result(unsigned.id)
    assert_refused(ran(result), clean_redis, "carries no signature")


def test_keys_rotate_through_the_fallbacks(clean_redis: redis.Redis, settings: Any) -> None:
    settings.SECRET_KEY = "the old key"
    now = tasks.add.using(backend="signed").enqueue(1, 1)
    later = tasks.add.using(backend="signed", queue_name="later").enqueue(2, 1)
    settings.SECRET_KEY = "the new key"
    settings.SECRET_KEY_FALLBACKS = ["the old key"]
    burst("signed", queues=["default"])
    assert now.refresh() or now.return_value == 2  # the old key still verifies
    settings.SECRET_KEY_FALLBACKS = []  # rotated out
    burst("signed", queues=["later"])
    later.refresh()
    assert_refused(later, clean_redis, "do not match")


@pytest.mark.parametrize("option", [1, "yes"])
def test_a_mistyped_option_is_a_check_error(option: Any) -> None:
    backend = RedisBackend("s", {"BACKEND": "x", "sign_payloads": option})
    assert [m.id for m in backend.check()] == ["redis_tasks.E002"]


def test_a_signed_chain_passes_values_on_and_the_mark_cannot_be_forged(
    clean_redis: redis.Redis,
) -> None:
    from redis_tasks.workflows import chain, step

    steps = [step(tasks.wf_double.using(backend="signed"), 3),
             step(tasks.wf_add.using(backend="signed"), 10)]  # fmt: skip
    handle = chain(*steps).enqueue()
    burst("signed")
    assert [r.return_value for r in handle.results()] == [6, 16]  # 16: the 6 came first
    # A stored task given the mark (to have the worker run it with a first argument slipped
    # in) no longer matches its signature.
    plain = tasks.add.using(backend="signed").enqueue(1, 2)
    clean_redis.hset(SIGNED.task(plain.id), mapping={"wf_prev": "1", "args": "[40, 1, 2]"})
    assert_refused(ran(plain), clean_redis, "do not match")
