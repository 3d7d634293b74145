"""No data of its own: an unmanaged model only to carry the dashboard's two permissions and to
give the dashboard its entry in the admin index."""

from __future__ import annotations

from django.db import models

VIEW_PERMISSION = "redis_tasks_dashboard.view_dashboard"
MANAGE_PERMISSION = "redis_tasks_dashboard.manage_tasks"


class Dashboard(models.Model):
    class Meta:
        managed = False  # no table: nothing is ever stored
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can view the task dashboard"),
            ("manage_tasks", "Can retry, cancel, purge and drain tasks"),
        ]
        verbose_name = "task dashboard"
        verbose_name_plural = "task dashboard"

    def __str__(self) -> str:
        return "Task dashboard"
