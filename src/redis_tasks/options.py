"""The validated options of one RedisBackend, read from its ``TASKS`` entry.

Options may sit at the top level of the entry in lower case (``"maxsize": 64``) or inside
``OPTIONS``. Problems are collected, not raised, so that Django's system checks can report all
of them with ids and hints; using a backend whose options are invalid raises
``ImproperlyConfigured`` with the same text.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.core import checks

from .connection import sentinel_addresses
from .limits import QueueLimits, parse_queue_limits
from .schedules import parse_schedule

# Keys of a TASKS entry that belong to Django itself.
FRAMEWORK_KEYS = frozenset({"BACKEND", "LOCATION", "QUEUES", "OPTIONS"})

DEFAULT_LOCATION = "redis://localhost:6379/0"
DEFAULT_RESULT_TTL = 24 * 3600
DEFAULT_LEASE_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CONCURRENCY = 10
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_RETRY_BACKOFF_MAX = 300.0
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_WAIT_TIMEOUT = 1.0
SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class BackendOptions:
    """Every option, with its default. See docs/configuration.md for each."""

    location: str = DEFAULT_LOCATION
    namespace: str = ""
    maxsize: int | None = None
    ttl: float | None = None
    result_ttl: int | None = DEFAULT_RESULT_TTL
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    concurrency: int = DEFAULT_CONCURRENCY
    retry_on: tuple[str, ...] = ()  # exception class paths retried; empty: no retries
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    timeout: float | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    enqueue_on_commit: str | None = None  # database alias whose commit releases enqueues
    schedules: dict[str, Any] = field(default_factory=dict)
    autostart: bool = True
    connection_options: dict[str, Any] = field(default_factory=dict)
    queues: frozenset[str] = frozenset()  # empty: any queue name is accepted
    cluster: bool = False  # LOCATION is a node of a Redis Cluster
    sentinels: tuple[tuple[str, int], ...] = ()  # LOCATION names a Sentinel service
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    wait_replicas: int = 0  # an enqueue returns once this many replicas have it (WAIT)
    wait_aof: bool = False  # ... and once the master's AOF has it on disk (WAITAOF)
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT  # seconds the enqueue waits for them
    direct_lanes: bool = True  # hot commands below redis-py's client API (shims/redis_py.py)
    isolated: bool = False  # every task of the backend runs in a child process (isolation.py)
    isolation_memory_limit: int | None = None  # MiB of address space for each child
    sign_payloads: bool = False  # sign each task at enqueue, run only tasks signed so
    queue_limits: dict[str, QueueLimits] = field(default_factory=dict)  # limits.py
    tracing: bool = False  # OpenTelemetry spans from enqueue to run (tracing.py)


OPTION_NAMES = (
    "queue_name",
    "maxsize",
    "ttl",
    "result_ttl",
    "lease_timeout",
    "max_attempts",
    "concurrency",
    "retry_on",
    "retry_backoff",
    "retry_backoff_max",
    "timeout",
    "max_payload_bytes",
    "enqueue_on_commit",
    "schedules",
    "autostart",
    "connection_options",
    "cluster",
    "sentinels",
    "sentinel_kwargs",
    "wait_replicas",
    "wait_aof",
    "wait_timeout",
    "direct_lanes",
    "isolated",
    "isolation_memory_limit",
    "sign_payloads",
    "queue_limits",
    "tracing",
)


def _positive_int_or_none(value: Any) -> bool:
    return value is None or (type(value) is int and value > 0)


def _positive_number_or_none(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and value > 0)


def _positive_int(value: Any) -> bool:
    return type(value) is int and value > 0


def _positive_number(value: Any) -> bool:
    return type(value) in (int, float) and value > 0


def exception_path(value: Any) -> str | None:
    """The dotted path of an exception class given as a class or a path; None if it is not one."""
    from django.utils.module_loading import import_string

    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError:
            return None
    if isinstance(value, type) and issubclass(value, BaseException):
        return f"{value.__module__}.{value.__qualname__}"
    return None


def _exception_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(exception_path(v) for v in value)


def _namespace(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not set(value) & set("{} \n\r\t")


VALIDATORS: dict[str, tuple[Any, str]] = {
    "queue_name": (_namespace, "a non-empty string without braces or whitespace"),
    "maxsize": (_positive_int_or_none, "a positive integer, or None for no limit"),
    "ttl": (_positive_number_or_none, "a positive number of seconds, or None to never expire"),
    "result_ttl": (_positive_int_or_none, "a positive number of seconds, or None to keep forever"),
    "lease_timeout": (_positive_number, "a positive number of seconds"),
    "max_attempts": (_positive_int, "a positive integer"),
    "concurrency": (_positive_int, "a positive integer"),
    "retry_on": (_exception_list, "a list of exception classes or their dotted paths"),
    "retry_backoff": (_positive_number, "a positive number of seconds"),
    "retry_backoff_max": (_positive_number, "a positive number of seconds"),
    "timeout": (_positive_number_or_none, "a positive number of seconds, or None for no limit"),
    "max_payload_bytes": (_positive_int, "a positive integer"),
    "enqueue_on_commit": (
        lambda v: isinstance(v, bool) or (isinstance(v, str) and bool(v)),
        "True (the 'default' database), False, or a database alias",
    ),
    "schedules": (lambda v: isinstance(v, dict), "a dict of schedule name -> schedule"),
    "autostart": (lambda v: isinstance(v, bool), "True or False"),
    "connection_options": (
        lambda v: isinstance(v, dict),
        "a dict of redis-py connection arguments",
    ),
    "cluster": (lambda v: isinstance(v, bool), "True or False"),
    "sentinels": (
        lambda v: sentinel_addresses(v) is not None,
        "a non-empty list of (host, port) pairs, e.g. [('sentinel-1', 26379)]",
    ),
    "sentinel_kwargs": (
        lambda v: isinstance(v, dict),
        "a dict of redis-py connection arguments for the sentinels, e.g. {'password': ...}",
    ),
    "wait_replicas": (lambda v: type(v) is int and v >= 0, "an integer, 0 (off) or more"),
    "wait_aof": (lambda v: isinstance(v, bool), "True or False"),
    "wait_timeout": (_positive_number, "a positive number of seconds"),
    "direct_lanes": (lambda v: isinstance(v, bool), "True or False"),
    "isolated": (lambda v: isinstance(v, bool), "True or False"),
    "sign_payloads": (lambda v: isinstance(v, bool), "True or False"),
    "queue_limits": (lambda v: True, "checked by limits.parse_queue_limits"),
    "tracing": (lambda v: isinstance(v, bool), "True or False"),
    "isolation_memory_limit": (
        _positive_int_or_none,
        "a positive number of MiB (each isolated task's address space), or None for no limit",
    ),
}


def parse_options(
    alias: str, params: dict[str, Any]
) -> tuple[BackendOptions, list[checks.CheckMessage]]:
    """Read a TASKS entry; return the options and every problem found (as check messages)."""
    errors: list[checks.CheckMessage] = []
    where = f"TASKS[{alias!r}]"
    raw: dict[str, Any] = {}

    nested = params.get("OPTIONS", {})
    if not isinstance(nested, dict):
        errors.append(
            checks.Error(
                f"{where}['OPTIONS'] must be a dict, not {type(nested).__name__}.",
                hint="Write OPTIONS as a dict, e.g. {'maxsize': 64}.",
                id="redis_tasks.E002",
            )
        )
        nested = {}

    for source, items in (("top level", params), ("OPTIONS", nested)):
        for key, value in items.items():
            if source == "top level" and key in FRAMEWORK_KEYS:
                continue
            if key not in VALIDATORS:
                close = difflib.get_close_matches(str(key).lower(), OPTION_NAMES, n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                errors.append(
                    checks.Error(
                        f"{where} has an unknown option {key!r} ({source}).",
                        hint=f"{hint}Known options: {', '.join(OPTION_NAMES)}.",
                        id="redis_tasks.E001",
                    )
                )
                continue
            if key in raw and raw[key] != value:
                errors.append(
                    checks.Error(
                        f"{where} sets {key!r} both at the top level and in OPTIONS, differently.",
                        hint="Set each option in one place only.",
                        id="redis_tasks.E004",
                    )
                )
                continue
            valid, expected = VALIDATORS[key]
            if not valid(value):
                errors.append(
                    checks.Error(
                        f"{where} option {key!r} is {value!r}; it must be {expected}.",
                        hint=f"Fix {key!r} in {where}.",
                        id="redis_tasks.E002",
                    )
                )
                continue
            raw[key] = value
    if "retry_on" in raw:
        raw["retry_on"] = tuple(exception_path(v) for v in raw["retry_on"])
    if "schedules" in raw:
        parsed: dict[str, Any] = {}
        for name, spec in raw["schedules"].items():
            schedule, problems = parse_schedule(str(name), spec, where)
            errors.extend(problems)
            if schedule is not None:
                parsed[schedule.name] = schedule
        raw["schedules"] = parsed
    if "queue_limits" in raw:
        raw["queue_limits"], problems = parse_queue_limits(where, raw["queue_limits"])
        errors.extend(problems)
    if raw.get("tracing") and not _opentelemetry_installed():
        errors.append(checks.Error(
            f"{where} sets 'tracing', but the OpenTelemetry API is not installed.",
            hint="pip install 'django-redis-tasks[otel]' (and configure an OpenTelemetry SDK "
            "in the project: see docs/observability.md), or leave 'tracing' out.",
            id="redis_tasks.E010",
        ))  # fmt: skip
    if "sentinels" in raw:
        raw["sentinels"] = tuple(sentinel_addresses(raw["sentinels"]) or ())
    if "enqueue_on_commit" in raw:
        on_commit = raw["enqueue_on_commit"]
        raw["enqueue_on_commit"] = "default" if on_commit is True else (on_commit or None)

    location = params.get("LOCATION", DEFAULT_LOCATION)
    if not isinstance(location, str) or urlsplit(location).scheme not in SCHEMES:
        errors.append(
            checks.Error(
                f"{where}['LOCATION'] is {location!r}; "
                "it must be a redis://, rediss:// or unix:// URL.",
                hint="For example 'redis://localhost:6379/0' or 'rediss://user:password@host:6380/0'.",
                id="redis_tasks.E003",
            )
        )
        location = DEFAULT_LOCATION
    else:
        errors += topology_errors(where, location, raw)

    queues: frozenset[str] = frozenset()
    if "QUEUES" in params:
        configured = params["QUEUES"]
        if not isinstance(configured, list | tuple | set | frozenset) or not all(
            isinstance(q, str) and q and not set(q) & set("{} \n\r\t") for q in configured
        ):
            errors.append(
                checks.Error(
                    f"{where}['QUEUES'] is {configured!r}; it must be a list of queue names "
                    "(strings without braces or whitespace).",
                    hint="Leave QUEUES out, or set it to [], to accept any queue name.",
                    id="redis_tasks.E005",
                )
            )
        else:
            queues = frozenset(configured)

    options = BackendOptions(
        location=location,
        namespace=raw.pop("queue_name", alias),
        queues=queues,
        **raw,
    )
    if not _namespace(options.namespace):
        errors.append(
            checks.Error(
                f"{where} alias {alias!r} cannot be used as the Redis namespace.",
                hint="Set 'queue_name' to a string without braces or whitespace.",
                id="redis_tasks.E002",
            )
        )
    return options, errors


def topology_errors(where: str, location: str, raw: dict[str, Any]) -> list[checks.CheckMessage]:
    """Connection options that do not go together, or a LOCATION that does not fit them."""
    parts = urlsplit(location)
    problems: list[tuple[str, str]] = []
    if raw.get("cluster") and raw.get("sentinels"):
        problems.append(
            (
                "sets both 'cluster' and 'sentinels'",
                "Redis Cluster does its own failover: use 'cluster': True alone, or 'sentinels' "
                "alone for a Sentinel-managed master.",
            )
        )
    if raw.get("cluster"):
        if parts.scheme == "unix":
            problems.append(
                (
                    "sets 'cluster' with a unix:// LOCATION",
                    "Give the redis:// or rediss:// URL of any cluster node.",
                )
            )
        elif parts.path.strip("/") not in ("", "0"):
            problems.append(
                (
                    f"sets 'cluster' with database {parts.path.strip('/')!r} in LOCATION",
                    "Redis Cluster has only database 0: drop the database from the URL; give "
                    "each backend instance its own 'queue_name' instead.",
                )
            )
        if not _cluster_transactions():
            problems.append(
                (
                    "sets 'cluster', but the installed redis-py has no transactions on a cluster",
                    "Upgrade redis-py: pip install -U redis.",
                )
            )
    if raw.get("sentinels"):
        service = parts.netloc.rpartition("@")[2]
        if parts.scheme == "unix" or not service or ":" in service:
            problems.append(
                (
                    f"uses sentinels, and its LOCATION {location!r} does not name a service",
                    "Write LOCATION as 'redis://[:password@]<service name>/<db>', e.g. "
                    "'redis://mymaster/0'; the sentinels' addresses go in 'sentinels'.",
                )
            )
        elif not parts.path.strip("/").isdigit() and parts.path.strip("/"):
            problems.append(
                (
                    f"uses sentinels, and database {parts.path!r} is not a number",
                    "End LOCATION with the database number, e.g. /0.",
                )
            )
    return [
        checks.Error(f"{where} {problem}.", hint=hint, id="redis_tasks.E008")
        for problem, hint in problems
    ]


def _opentelemetry_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("opentelemetry") is not None


def _cluster_transactions() -> bool:
    """Whether redis-py's cluster pipelines run MULTI/EXEC (added in redis-py 6)."""
    import redis.cluster

    return hasattr(redis.cluster, "TransactionStrategy")
