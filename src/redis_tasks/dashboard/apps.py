from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "redis_tasks.dashboard"
    label = "redis_tasks_dashboard"
    verbose_name = "Redis tasks"
    default_auto_field = "django.db.models.AutoField"
