"""Django settings for ``compare.py``: one system under test, chosen by the environment.

``REDIS_TASKS_BENCH_SYSTEM`` names it (``redis_tasks``, ``tasks_redis``, ``tasks_rq``,
``tasks_db`` or ``threadmill``); ``REDIS_TASKS_BENCH_URL`` is the private Redis the benchmark
started and ``REDIS_TASKS_BENCH_SQLITE`` the temp SQLite file of django-tasks-db. The
benchmark's client and every worker process it starts load these settings, so they all see the
same store.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

SYSTEM = os.environ.get("REDIS_TASKS_BENCH_SYSTEM", "redis_tasks")
REDIS_URL = os.environ.get("REDIS_TASKS_BENCH_URL", "")
SQLITE = os.environ.get("REDIS_TASKS_BENCH_SQLITE", "")
RESULT_TTL = int(os.environ.get("REDIS_TASKS_BENCH_RESULT_TTL", "86400"))

SECRET_KEY = "benchmarks-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, Any]] = {}
TASKS: dict[str, dict[str, Any]] = {}


class WithoutPersistenceWarning(logging.Filter):
    """The benchmark's Redis runs without persistence on purpose: drop the worker's warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "persistence is off" not in record.getMessage()


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"expected": {"()": WithoutPersistenceWarning}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["expected"]}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    # The frameworks log every task's start and end at INFO/DEBUG: not what is measured here.
    "loggers": {name: {"level": "WARNING"} for name in ("django.tasks", "django_tasks")},
}

if SYSTEM == "redis_tasks":
    INSTALLED_APPS = ["redis_tasks"]
    TASKS = {
        "default": {
            "BACKEND": "redis_tasks.backend.RedisBackend",
            "LOCATION": f"{REDIS_URL}/0",
            "maxsize": None,
            "autostart": False,
            "result_ttl": RESULT_TTL,
        },
    }
elif SYSTEM == "tasks_redis":
    INSTALLED_APPS = ["django_tasks_redis"]
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_redis.RedisTaskBackend",
            "QUEUES": [],
            "OPTIONS": {"REDIS_URL": f"{REDIS_URL}/0", "REDIS_RESULT_TTL": RESULT_TTL},
        },
    }
elif SYSTEM == "tasks_rq":
    INSTALLED_APPS = ["django_rq", "django_tasks_rq"]
    # django-rq's default ("URL") builds a new Redis client, so a new connection, on every
    # enqueue; "USE_REDIS_CACHE" with django-redis (django-rq's documented alternative) reuses
    # one pooled client, about 10x faster to enqueue here.
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"{REDIS_URL}/0"}}
    RQ_QUEUES = {"default": {"USE_REDIS_CACHE": "default", "DEFAULT_RESULT_TTL": RESULT_TTL}}
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
elif SYSTEM == "tasks_db":
    INSTALLED_APPS = ["django_tasks_db"]
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE,
            # WAL lets the client read results while a worker writes; a busy timeout rides
            # over the short write locks of other processes.
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20},
        },
    }
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif SYSTEM == "threadmill":
    # As its README sets it up; its options take timedelta values.
    INSTALLED_APPS = ["threadmill"]
    TASKS = {
        "default": {
            "BACKEND": "threadmill.backends.redis.RedisTaskBackend",
            "REDIS_URL": f"{REDIS_URL}/0",
            "OPTIONS": {"result_ttl": timedelta(seconds=RESULT_TTL)},
        },
    }
else:
    raise RuntimeError(f"unknown REDIS_TASKS_BENCH_SYSTEM {SYSTEM!r}")
