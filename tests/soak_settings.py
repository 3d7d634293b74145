"""Settings of the soak (tests/soak.py): the test project, with one backend on the soak's own
Redis, short leases (so lost ones come back fast), retries on ConnectionError, a task every
second from a schedule, and the real PostgreSQL database (not a test database) for the ledger."""

from __future__ import annotations

import os
from typing import Any

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

URL = os.environ.get("REDIS_TASKS_SOAK_URL", "redis://127.0.0.1:6399")
TASKS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"{URL}/0",
        "lease_timeout": 2,
        "max_attempts": 6,
        "retry_on": ["builtins.ConnectionError"],
        "retry_backoff": 0.05,
        "result_ttl": int(os.environ.get("REDIS_TASKS_SOAK_RESULT_TTL", "3600")),
        "autostart": False,
        "schedules": {"soak-tick": {"task": "tests.soak_tasks.tick", "every": 1}},
    },
}
DATABASES = {"default": {**DATABASES["default"], "NAME": os.environ.get("PGDATABASE", "test")}}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "redis_tasks": {"handlers": ["console"], "level": "WARNING"},
        "django.tasks": {"level": "WARNING"},
        "django_tasks": {"level": "WARNING"},
    },
}
