"""Django settings for the benchmark: one RedisBackend on the benchmark's private Redis.

``bench.py`` starts its own ``redis-server`` and passes its URL in ``REDIS_TASKS_BENCH_URL``,
so worker subprocesses started by the benchmark load these settings and talk to the same server.
"""

from __future__ import annotations

import logging
import os

try:
    import django.tasks  # noqa: F401

    FRAMEWORK_APPS: list[str] = []
except ImportError:  # Django 5.2: the django-tasks backport
    FRAMEWORK_APPS = ["django_tasks"]

REDIS_URL = os.environ["REDIS_TASKS_BENCH_URL"]

SECRET_KEY = "benchmarks-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [*FRAMEWORK_APPS, "redis_tasks"]
DATABASES: dict[str, dict[str, str]] = {}


class WithoutPersistenceWarning(logging.Filter):
    """The benchmark's Redis runs without persistence on purpose: drop the worker's warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "persistence is off" not in record.getMessage()


TASKS = {
    "default": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{REDIS_URL}/0",
        "maxsize": None,
        "autostart": False,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"expected": {"()": WithoutPersistenceWarning}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["expected"]}},
    "loggers": {"redis_tasks": {"handlers": ["console"], "level": "WARNING"}},
}
# REDIS_TASKS_BENCH_TASK_LOG=WARNING: the framework's per-task INFO lines ("django.tasks"; the
# backport's "django_tasks") are not even built, as the README suggests for high rates; unset,
# Django's default applies.
if os.environ.get("REDIS_TASKS_BENCH_TASK_LOG"):
    for framework_logger in ("django.tasks", "django_tasks"):
        LOGGING["loggers"][framework_logger] = {"level": os.environ["REDIS_TASKS_BENCH_TASK_LOG"]}
