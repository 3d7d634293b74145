"""Settings of the demo project: one RedisBackend, configured the way a project would."""

import os

from redis_tasks.testing import free_port

try:
    import django.tasks  # noqa: F401  (Django 6.0+ ships the task framework)

    TASK_FRAMEWORK_APPS: list[str] = []
except ImportError:  # Django 5.2: the django-tasks backport
    TASK_FRAMEWORK_APPS = ["django_tasks"]

# `manage.py demo` starts a throwaway Redis on this port (never a shared one on 6379).
REDIS_PORT = int(os.environ.setdefault("DEMO_REDIS_PORT", str(free_port())))

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    *TASK_FRAMEWORK_APPS,
    "redis_tasks",
    "demoproject",
]

TASKS = {
    "default": {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "maxsize": 1000,  # at most this many tasks wait; enqueue raises QueueFull beyond
        "ttl": 600,  # a task not started within 10 minutes fails as TaskExpired
        "queue_name": "demo",  # the Redis key namespace of this backend
        "concurrency": 20,  # tasks in flight per worker process
        "autostart": False,  # the demo runs its worker itself
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        # The framework logs each task's start and finish; the demo prints a summary instead.
        "django.tasks": {"level": "CRITICAL"},
        "django_tasks": {"level": "CRITICAL"},
        "redis_tasks": {"handlers": ["console"], "level": "WARNING"},
    },
}
