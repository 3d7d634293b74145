"""Configuration: options at the top level or in OPTIONS, system checks with ids and hints."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from redis_tasks.backend import RedisBackend
from redis_tasks.compat import InvalidTask, task_backends
from redis_tasks.options import DEFAULT_RESULT_TTL
from tests import tasks


def backend(**params: Any) -> RedisBackend:
    return RedisBackend("cfg", {"BACKEND": "redis_tasks.backend.RedisBackend", **params})


def ids(b: RedisBackend) -> list[str]:
    return [m.id for m in b.check()]


def test_readme_configuration_is_read_from_the_top_level() -> None:
    b = task_backends["default"]
    assert isinstance(b, RedisBackend)
    assert (b.config.maxsize, b.config.ttl, b.config.namespace) == (64, 3600, "task_queue")
    assert list(b.check()) == []


def test_options_inside_OPTIONS_are_read_too() -> None:
    b = backend(OPTIONS={"maxsize": 5, "ttl": 1.5, "queue_name": "ns", "result_ttl": None})
    assert (b.config.maxsize, b.config.ttl, b.config.namespace, b.config.result_ttl) == (
        5,
        1.5,
        "ns",
        None,
    )
    assert list(b.check()) == []


def test_defaults() -> None:
    b = backend()
    assert b.config.namespace == "cfg"  # the alias
    assert b.config.maxsize is None and b.config.ttl is None
    assert b.config.result_ttl == DEFAULT_RESULT_TTL
    assert b.queues == set()


def test_flags_are_all_true() -> None:
    b = task_backends["default"]
    assert (
        b.supports_defer and b.supports_async_task and b.supports_get_result and b.supports_priority
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:secret@redis.example.com:6380/2",
        "unix://user:secret@/var/run/redis/redis.sock?db=3",
    ],
)
def test_location_schemes_are_accepted(url: str) -> None:
    assert list(backend(LOCATION=url).check()) == []


def test_unknown_option_is_E001_with_a_suggestion() -> None:
    b = backend(maxsise=3)
    [error] = b.check()
    assert error.id == "redis_tasks.E001"
    assert "maxsise" in error.msg and "Did you mean 'maxsize'" in error.hint


def test_unknown_option_inside_OPTIONS_is_E001() -> None:
    assert ids(backend(OPTIONS={"nonsense": 1})) == ["redis_tasks.E001"]


@pytest.mark.parametrize(
    "params",
    [
        {"maxsize": 0},
        {"maxsize": "64"},
        {"ttl": -1},
        {"result_ttl": 1.5},
        {"queue_name": "has{brace}"},
        {"queue_name": ""},
        {"lease_timeout": 0},
        {"concurrency": 0},
        {"autostart": "yes"},
        {"OPTIONS": "maxsize=3"},
    ],
)
def test_invalid_values_are_E002(params: dict[str, Any]) -> None:
    errors = list(backend(**params).check())
    assert [e.id for e in errors] == ["redis_tasks.E002"]
    assert errors[0].hint


@pytest.mark.parametrize("location", ["http://localhost:6379", "localhost:6379", 6379])
def test_bad_location_is_E003(location: Any) -> None:
    assert ids(backend(LOCATION=location)) == ["redis_tasks.E003"]


def test_conflicting_top_level_and_OPTIONS_is_E004() -> None:
    assert ids(backend(maxsize=3, OPTIONS={"maxsize": 4})) == ["redis_tasks.E004"]
    assert ids(backend(maxsize=3, OPTIONS={"maxsize": 3})) == []


@pytest.mark.parametrize("queues", ["default", ["ok", "bad}"], [1]])
def test_bad_QUEUES_is_E005(queues: Any) -> None:
    assert ids(backend(QUEUES=queues)) == ["redis_tasks.E005"]


def test_checks_never_touch_the_network() -> None:
    b = backend(LOCATION="redis://unresolvable.invalid:1/0")
    assert list(b.check()) == []
    assert not b.store.connections.sync_created


def test_using_a_misconfigured_backend_raises_with_the_check_text() -> None:
    b = backend(maxsize=-1)
    with pytest.raises(
        ImproperlyConfigured, match="'maxsize' is -1; it must be a positive integer"
    ):
        b.enqueue(tasks.add, (1, 2), {})


def test_system_check_framework_reports_backend_errors(settings: Any) -> None:
    from django.core import checks

    settings.TASKS = {"bad": {"BACKEND": "redis_tasks.backend.RedisBackend", "maxsize": "x"}}
    assert "redis_tasks.E002" in [m.id for m in checks.run_checks()]


def test_QUEUES_is_enforced_when_configured() -> None:
    other = task_backends["other"]
    with pytest.raises(InvalidTask):
        tasks.add.using(backend="other", queue_name="alternate").enqueue(1, 2)
    assert other.queues == {"default", "high"}


def test_any_queue_name_is_accepted_without_QUEUES() -> None:
    result = tasks.nudge_nudge_wink_wink.enqueue()
    assert result.task.queue_name == "alternate"


def test_cluster_and_sentinel_options_are_read() -> None:
    c = backend(LOCATION="rediss://user:pw@node-1:7000", cluster=True)
    assert c.config.cluster and c.store.connections.topology.kind == "cluster"
    s = backend(LOCATION="redis://:pw@mymaster/2", sentinels=[("s1", 26379), ["s2", 26380]],
                sentinel_kwargs={"password": "sentinel-pw"}, wait_replicas=1, wait_aof=True,
                wait_timeout=0.25)  # fmt: skip
    assert s.config.sentinels == (("s1", 26379), ("s2", 26380))
    assert s.store.connections.topology.kind == "sentinel"
    assert (s.config.wait_replicas, s.config.wait_aof, s.config.wait_timeout) == (1, True, 0.25)
    assert list(s.check()) == []
    # A cluster needs redis-py's transactions on a cluster (redis-py 6): E008 says so before.
    from redis_tasks.options import _cluster_transactions

    assert [e.id for e in c.check()] == ([] if _cluster_transactions() else ["redis_tasks.E008"])


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"cluster": True, "sentinels": [("s", 26379)]}, "both 'cluster' and 'sentinels'"),
        ({"cluster": True, "LOCATION": "unix:///tmp/redis.sock"}, "unix://"),
        ({"cluster": True, "LOCATION": "redis://node:7000/3"}, "only database 0"),
        ({"sentinels": [("s", 26379)], "LOCATION": "redis://mymaster:6379/0"}, "service"),
        ({"sentinels": [("s", 26379)], "LOCATION": "redis://mymaster/x"}, "database number"),
    ],
)
def test_connection_options_that_do_not_fit_are_E008(params: dict[str, Any], problem: str) -> None:
    errors = backend(**params).check()
    assert {e.id for e in errors} == {"redis_tasks.E008"}
    assert any(problem in f"{e.msg} {e.hint}" for e in errors)


@pytest.mark.parametrize(
    "params",
    [{"sentinels": [("s", 0)]}, {"sentinels": ["s:26379"]}, {"sentinels": []},
     {"wait_replicas": -1}, {"wait_timeout": 0}, {"cluster": "yes"}],
)  # fmt: skip
def test_invalid_connection_values_are_E002(params: dict[str, Any]) -> None:
    assert ids(backend(**params)) == ["redis_tasks.E002"]


def test_tracing_without_the_opentelemetry_api_is_a_check_error(monkeypatch: Any) -> None:
    monkeypatch.setattr("redis_tasks.options._opentelemetry_installed", lambda: False)
    b = backend(tracing=True)
    [error] = b.check()
    assert error.id == "redis_tasks.E010" and "[otel]" in error.hint
    assert ids(backend(tracing=False)) == [] and ids(backend(tracing="yes")) == ["redis_tasks.E002"]
