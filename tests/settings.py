"""Settings of the test project. The Redis port is chosen here once and passed on to child
processes through the environment, so a worker started by a test talks to the suite's server."""

from __future__ import annotations

import os
from typing import Any

from tests.redis_server import free_port

try:
    import django.tasks  # noqa: F401

    FRAMEWORK_APPS: list[str] = []
    IMMEDIATE = "django.tasks.backends.immediate.ImmediateBackend"
except ImportError:
    FRAMEWORK_APPS = ["django_tasks"]
    IMMEDIATE = "django_tasks.backends.immediate.ImmediateBackend"

PORT = os.environ.setdefault("REDIS_TASKS_TEST_PORT", str(free_port()))
# A worker started on another network host (tests/test_hosts.py) is given that Redis's address.
HOST = os.environ.get("REDIS_TASKS_TEST_HOST", "127.0.0.1")
REDIS_URL = f"redis://{HOST}:{PORT}"

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    *FRAMEWORK_APPS,
    "redis_tasks",
    "redis_tasks.dashboard",
]
# What the admin (and so the dashboard, tests/test_dashboard.py) needs.
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
# PostgreSQL, as the machine provides it: a real database whose connections really close.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "CONN_MAX_AGE": 0,
        # Several suites may run at once on one machine, each with its own suffix.
        "TEST": {"NAME": "test_redis_tasks" + os.environ.get("REDIS_TASKS_TEST_DB_SUFFIX", "")},
    },
}
# A second alias (its own test database) for multi-database commit-aware enqueue.
DATABASES["other"] = {
    **DATABASES["default"],
    "TEST": {"NAME": "test_redis_tasks_other" + os.environ.get("REDIS_TASKS_TEST_DB_SUFFIX", "")},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS: dict[str, dict[str, Any]] = {
    # The configuration of the README, exactly (but for the port).
    "default": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "maxsize": 64,
        "ttl": 3600,
        "queue_name": "task_queue",
    },
    # A second instance on the same Redis database, with QUEUES enforced and OPTIONS nested.
    "other": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "QUEUES": ["default", "high"],
        "OPTIONS": {"queue_name": "other_ns", "result_ttl": 600},
    },
    "immediate": {"BACKEND": IMMEDIATE},
    # Enqueues inside a transaction wait for its commit.
    "on_commit": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "enqueue_on_commit": True,
    },
    "on_commit_other_db": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "enqueue_on_commit": "other",
    },
    # Periodic tasks, served only by workers started for this alias.
    "scheduled": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "schedules": {"every-second": {"task": "tests.tasks.add", "every": 1, "args": [1, 2]}},
    },
    # Backend-wide retry defaults.
    "retrying": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/12",
        "retry_on": ["builtins.ValueError"],
        "retry_backoff": 0.01,
        "max_attempts": 2,
    },
}
# Isolated tasks under an address-space limit (tests/test_isolation.py).
TASKS["isolating"] = {
    "BACKEND": "redis_tasks.backend.RedisBackend",
    "LOCATION": f"{REDIS_URL}/12",
    "isolation_memory_limit": 1024,
}
# Signed payloads (tests/test_signing.py).
TASKS["signed"] = {
    "BACKEND": "redis_tasks.backend.RedisBackend",
    "LOCATION": f"{REDIS_URL}/12",
    "sign_payloads": True,
}
# Queue limits (tests/test_flow_control.py).
TASKS["limited"] = {
    "BACKEND": "redis_tasks.backend.RedisBackend",
    "LOCATION": f"{REDIS_URL}/12",
    "queue_limits": {"slow": {"concurrency_limit": 1}, "metered": {"rate_limit": "3/s"}},
}
# Fault-injection tests shorten leases in the worker processes they start.
if "REDIS_TASKS_TEST_LEASE" in os.environ:
    TASKS["default"]["lease_timeout"] = float(os.environ["REDIS_TASKS_TEST_LEASE"])
if "REDIS_TASKS_TEST_MAX_ATTEMPTS" in os.environ:
    TASKS["default"]["max_attempts"] = int(os.environ["REDIS_TASKS_TEST_MAX_ATTEMPTS"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"redis_tasks": {"handlers": ["console"], "level": "WARNING"}},
}

# Tracing (tests/test_observability.py): a worker process started with REDIS_TASKS_TEST_SPANS
# writes its spans to that file.
TASKS["traced"] = {
    "BACKEND": "redis_tasks.backend.RedisBackend",
    "LOCATION": f"{REDIS_URL}/12",
    "tracing": True,
    "retry_backoff": 0.01,
}
if "REDIS_TASKS_TEST_SPANS" in os.environ:
    from tests import otel_spans

    otel_spans.install()
