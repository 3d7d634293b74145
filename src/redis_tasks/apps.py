from __future__ import annotations

from django.apps import AppConfig


class RedisTasksConfig(AppConfig):
    name = "redis_tasks"
    verbose_name = "Redis tasks"

    def ready(self) -> None:
        from . import autostart

        autostart.maybe_start()
