"""The dashboard's entry in the admin: a ModelAdmin whose URLs are the dashboard's pages.

It registers itself on ``django.contrib.admin.site``. For another AdminSite, register it there:
``my_site.register(Dashboard, DashboardAdmin)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from . import views
from .models import Dashboard

if TYPE_CHECKING:
    ModelAdminBase = admin.ModelAdmin[Dashboard]
else:
    ModelAdminBase = admin.ModelAdmin


class DashboardAdmin(ModelAdminBase):
    """No objects to add, change or delete: its "change list" is the dashboard's overview."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return views.can_view(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                return view(self, request, *args, **kwargs)

            wrapper.model_admin = self  # type: ignore[attr-defined]
            return update_wrapper(self.admin_site.admin_view(wrapper), view)

        changelist = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [
            path("", wrap(views.overview), name=changelist),
            path("tasks/", wrap(views.task_list), name="redis_tasks_dashboard_tasks"),
            path(
                "tasks/<str:backend>/<str:task_id>/",
                wrap(views.task_detail),
                name="redis_tasks_dashboard_task",
            ),
            path(
                "tasks/<str:backend>/<str:task_id>/retry/",
                wrap(views.retry),
                name="redis_tasks_dashboard_retry",
            ),
            path(
                "tasks/<str:backend>/<str:task_id>/cancel/",
                wrap(views.cancel),
                name="redis_tasks_dashboard_cancel",
            ),
            path(
                "workflows/<str:backend>/<str:workflow_id>/",
                wrap(views.workflow),
                name="redis_tasks_dashboard_workflow",
            ),
            path("purge/<str:backend>/", wrap(views.purge), name="redis_tasks_dashboard_purge"),
            path("drain/<str:backend>/", wrap(views.drain), name="redis_tasks_dashboard_drain"),
            path("pause/<str:backend>/", wrap(views.pause), name="redis_tasks_dashboard_pause"),
        ]


admin.site.register(Dashboard, DashboardAdmin)
