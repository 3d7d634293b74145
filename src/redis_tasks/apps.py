from __future__ import annotations

from django.apps import AppConfig


class RedisTasksConfig(AppConfig):
    name = "redis_tasks"
    verbose_name = "Redis tasks"

    def ready(self) -> None:
        # The framework registers its system check (which runs every backend's check()) when
        # its package is imported; on Django 6 nothing imports it at start-up, so
        # `manage.py check` would never see a misconfigured RedisBackend.
        from . import autostart, compat  # noqa: F401

        autostart.maybe_start()
