"""The dashboard's pages and actions. ``DashboardAdmin.get_urls`` mounts them in the admin, which
checks for an active staff user (else: its login page) and CSRF; each view checks the
dashboard's own permissions (else: 403)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlencode

import django
import redis
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from ..backend import RedisBackend, redis_backends
from ..ops import STATES, Inspector, OperationRefused
from . import charts, queries
from .models import MANAGE_PERMISSION, VIEW_PERMISSION

if TYPE_CHECKING:
    from .admin import DashboardAdmin

REFRESH_CHOICES = (5, 15, 60)
AGE_UNITS = {"m": 60, "h": 3600, "d": 86400}


# --- permissions -----------------------------------------------------------------------------


def can_view(user: Any) -> bool:
    """Viewing needs ``view_dashboard`` (or ``manage_tasks``, as change implies view in the
    admin), on an active staff account."""
    return bool(
        user.is_active
        and user.is_staff
        and (user.has_perm(VIEW_PERMISSION) or user.has_perm(MANAGE_PERMISSION))
    )


def can_manage(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(MANAGE_PERMISSION))


def _require_view(request: HttpRequest) -> None:
    if not can_view(request.user):
        raise PermissionDenied("The task dashboard needs the view_dashboard permission.")


def _require_manage(request: HttpRequest) -> None:
    if not can_manage(request.user):
        raise PermissionDenied("Managing tasks needs the manage_tasks permission.")


# --- helpers ---------------------------------------------------------------------------------


def _backends() -> dict[str, RedisBackend]:
    return {b.alias: b for b in redis_backends()}


def _backend(alias: str) -> RedisBackend:
    backend = _backends().get(alias)
    if backend is None:
        raise Http404(f"No RedisBackend {alias!r} in settings.TASKS.")
    return backend


def _url(model_admin: DashboardAdmin, name: str, *args: str) -> str:
    return reverse(f"admin:{name}", args=args, current_app=model_admin.admin_site.name)


def overview_url(model_admin: DashboardAdmin) -> str:
    opts = model_admin.opts
    return _url(model_admin, f"{opts.app_label}_{opts.model_name}_changelist")


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _render(
    model_admin: DashboardAdmin, request: HttpRequest, template: str, title: str,
    context: dict[str, Any], status: int = 200,
) -> TemplateResponse:  # fmt: skip
    site = model_admin.admin_site
    request.current_app = site.name
    opts = model_admin.opts
    overview = overview_url(model_admin)
    extra = context.pop("crumbs", [])
    crumbs = [
        ("Home", reverse("admin:index", current_app=site.name)),
        (str(opts.app_config.verbose_name),
         reverse("admin:app_list", args=[opts.app_label], current_app=site.name)),
        ("Task dashboard", overview if extra else None),
        *extra,
    ]  # fmt: skip
    full = {
        **site.each_context(request),
        "title": title,
        "opts": model_admin.opts,
        "app_label": model_admin.opts.app_label,
        "overview_url": overview,
        "crumbs": crumbs,
        "ol_breadcrumbs": django.VERSION >= (6, 1),  # earlier admins style a div
        "tasks_url": _url(model_admin, "redis_tasks_dashboard_tasks"),
        "can_manage": can_manage(request.user),
        "state_labels": queries.STATE_LABELS,
        **context,
    }
    return TemplateResponse(request, f"redis_tasks_dashboard/{template}", full, status=status)


def _confirm(
    model_admin: DashboardAdmin, request: HttpRequest, title: str, lines: list[str],
    button: str, back: str,
) -> TemplateResponse:  # fmt: skip
    """The confirmation page of a destructive action: the same POST again, with confirm=yes."""
    hidden = [
        (k, v) for k, v in request.POST.items() if k not in ("csrfmiddlewaretoken", "confirm")
    ]
    context = {"lines": lines, "button": button, "back": back, "hidden": hidden,
               "action": request.get_full_path(), "crumbs": [("Confirm", None)]}  # fmt: skip
    return _render(model_admin, request, "confirm.html", title, context)


def _confirmed(request: HttpRequest) -> bool:
    return request.POST.get("confirm") == "yes"


# --- pages -----------------------------------------------------------------------------------


def overview(model_admin: DashboardAdmin, request: HttpRequest) -> HttpResponse:
    """Every RedisBackend: counts by state and queue, throughput, live workers."""
    _require_view(request)
    refresh = _int(request.GET.get("refresh"), 0)
    backends = [queries.backend_overview(b) for b in redis_backends()]
    tasks_url = _url(model_admin, "redis_tasks_dashboard_tasks")

    def listing(**params: str) -> str:
        return f"{tasks_url}?{urlencode(params)}"

    for b in backends:
        b.cards = [
            (state, label, b.totals.get(state, 0), listing(backend=b.alias, state=state))
            for state, label in queries.STATE_LABELS.items()
        ]
        if b.hour is not None:
            now = b.hour.with_depth_now(b.waiting, b.totals["running"])
            b.charts = [charts.throughput(b.hour, b.alias), charts.depth(now, b.alias)]
        b.drain_url = _url(model_admin, "redis_tasks_dashboard_drain", b.alias)
        b.pause_url = _url(model_admin, "redis_tasks_dashboard_pause", b.alias)
        b.purge_url = _url(model_admin, "redis_tasks_dashboard_purge", b.alias)
        for q in b.queues:
            q["url"] = q["ready_url"] = listing(backend=b.alias, state="ready", queue=q["name"])
            q["deferred_url"] = listing(backend=b.alias, state="deferred", queue=q["name"])
        for w in b.workers:
            w["in_flight_links"] = [
                (task_id, _url(model_admin, "redis_tasks_dashboard_task", b.alias, task_id))
                for task_id in w.get("in_flight") or []
            ]
    context = {
        "backends": backends,
        "refresh": refresh if refresh in REFRESH_CHOICES else 0,
        "refresh_choices": REFRESH_CHOICES,
        "states": list(queries.STATE_LABELS),
    }
    return _render(model_admin, request, "overview.html", "Task dashboard", context)


def task_list(model_admin: DashboardAdmin, request: HttpRequest) -> HttpResponse:
    """A page of tasks in a state of one backend, filterable by queue and task path."""
    _require_view(request)
    backends = _backends()
    alias = request.GET.get("backend") or next(iter(backends), "")
    backend = _backend(alias)
    state = request.GET.get("state") or "ready"
    if state not in STATES:
        state = "ready"
    queue = request.GET.get("queue") or None
    task = (request.GET.get("task") or "").strip() or None
    limit = _int(request.GET.get("per_page"), 50)
    if limit not in queries.PER_PAGE_CHOICES:
        limit = 50
    offset = max(0, _int(request.GET.get("offset"), 0))
    inspector = Inspector(backend)
    error, page, queue_names, counts = None, None, [], {}
    try:
        queue_names = inspector.queues()
        counts = queries.state_counts(inspector, queue)
        page = queries.list_page(inspector, state, queue, task, offset, limit)
    except redis.RedisError as exc:
        error = f"{type(exc).__name__}: {exc}"

    def link(**changes: Any) -> str:
        params = QueryDict(mutable=True)
        current = {"backend": alias, "state": state, "queue": queue or "", "task": task or "",
                   "per_page": limit if limit != 50 else "", "offset": offset}  # fmt: skip
        for key, value in {**current, **changes}.items():
            if value not in ("", None, 0):
                params[key] = str(value)
        return "?" + params.urlencode()

    context = {
        "backend": backend.alias,
        "backend_names": list(backends),
        "state": state,
        "show_finished": state in ("failed", "successful", "dead"),
        "queue": queue,
        "task": task,
        "per_page": limit,
        "per_page_choices": queries.PER_PAGE_CHOICES,
        "queue_names": queue_names,
        "page": page,
        "error": error,
        "state_tabs": [
            (s, label, counts.get(s), link(state=s, offset=0))
            for s, label in queries.STATE_LABELS.items()
        ],
        "previous_link": link(offset=page.previous_offset) if page else "",
        "next_link": link(offset=page.end) if page else "",
        "here": request.get_full_path(),
        "crumbs": [("Tasks", None)],
        "scan_window": queries.SCAN_WINDOW,
        "max_merged_offset": queries.MAX_MERGED_OFFSET,
    }
    title = f"{queries.STATE_LABELS[state]} tasks · {backend.alias}"
    return _render(model_admin, request, "task_list.html", title, context)


def task_detail(
    model_admin: DashboardAdmin, request: HttpRequest, backend: str, task_id: str
) -> HttpResponse:
    """One task whole: arguments, attempts, workers, every error's traceback, return value."""
    _require_view(request)
    chosen = _backend(backend)
    inspector = Inspector(chosen)
    crumbs = [("Tasks", _url(model_admin, "redis_tasks_dashboard_tasks")), (task_id, None)]
    try:
        data = queries.task_detail(inspector, task_id)
    except OperationRefused as exc:
        context: dict[str, Any] = {"backend": chosen.alias, "task_id": task_id,
                                   "missing": str(exc), "crumbs": crumbs}  # fmt: skip
        return _render(model_admin, request, "task_detail.html", f"Task {task_id}", context, 404)
    except redis.RedisError as exc:  # an outage: say so (Retry and Cancel come back here)
        context = {"backend": chosen.alias, "task_id": task_id, "crumbs": crumbs,
                   "unreachable": f"{type(exc).__name__}: {exc}"}  # fmt: skip
        return _render(model_admin, request, "task_detail.html", f"Task {task_id}", context, 503)
    list_link = (
        _url(model_admin, "redis_tasks_dashboard_tasks")
        + "?"
        + urlencode({"backend": chosen.alias, "state": data.get("state") or "ready"})
    )
    pretty = {}
    if data["valid"]:
        pretty = {name: _pretty(data[name]) for name in ("args", "kwargs", "return_value")}
    context = {
        "backend": chosen.alias,
        "task_id": task_id,
        "task": data,
        "pretty": pretty,
        "raw": sorted(data.get("raw", {}).items()),
        "can_retry": queries.can_retry(data),
        "can_cancel": queries.can_cancel(data),
        "here": request.get_full_path(),
        "crumbs": [("Tasks", list_link), (task_id, None)],
        "expires": timezone.now() + timedelta(seconds=data["ttl"])
        if data.get("ttl", -1) > 0
        else None,
    }
    return _render(model_admin, request, "task_detail.html", f"Task {task_id}", context)


def workflow(
    model_admin: DashboardAdmin, request: HttpRequest, backend: str, workflow_id: str
) -> HttpResponse:
    """A chain, group or chord: each of its tasks, with a link to its page."""
    from .. import progress
    from ..compat import TaskResultDoesNotExist
    from ..workflows import WorkflowHandle

    _require_view(request)
    chosen = _backend(backend)
    crumbs = [("Tasks", _url(model_admin, "redis_tasks_dashboard_tasks")), (workflow_id, None)]
    title = f"Workflow {workflow_id}"
    try:
        handle = WorkflowHandle.get(workflow_id, chosen.alias)
        state, results = handle.state(), handle.results()
    except TaskResultDoesNotExist as exc:
        context: dict[str, Any] = {"missing": str(exc), "crumbs": crumbs}
        return _render(model_admin, request, "workflow.html", title, context, 404)
    except redis.RedisError as exc:
        context = {"missing": f"Redis is not reachable: {exc}", "crumbs": crumbs}
        return _render(model_admin, request, "workflow.html", title, context, 503)
    rows = []
    for task_id, result in zip(handle.all_ids, results, strict=True):
        rows.append({
            "id": task_id, "result": result, "callback": task_id == handle.callback_id,
            "path": result.task.module_path if result else None,
            "status": str(result.status) if result else None,
            "progress": progress.describe(progress.of(result)) if result else "",
            "url": _url(model_admin, "redis_tasks_dashboard_task", chosen.alias, task_id),
        })  # fmt: skip
    context = {"workflow": handle, "state": state, "rows": rows, "crumbs": crumbs}
    return _render(model_admin, request, "workflow.html", title, context)


# --- actions (POST) --------------------------------------------------------------------------

View: TypeAlias = Callable[..., HttpResponse]


def post_only(view: View) -> View:
    """Like ``require_POST``, for views that take the ModelAdmin first: anything else is 405."""

    @wraps(view)
    def inner(model_admin: DashboardAdmin, request: HttpRequest, *args: Any, **kw: Any) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return view(model_admin, request, *args, **kw)

    return inner


@post_only
def retry(
    model_admin: DashboardAdmin, request: HttpRequest, backend: str, task_id: str
) -> HttpResponse:
    """Re-enqueue a failed or dead-lettered task (not destructive: no confirmation)."""
    _require_manage(request)
    inspector = Inspector(_backend(backend))
    try:
        inspector.retry(task_id)
    except (OperationRefused, redis.RedisError) as exc:
        model_admin.message_user(request, f"Not retried: {exc}", messages.ERROR)
    else:
        model_admin.message_user(
            request, f"Task {task_id} was re-enqueued and will run again.", messages.SUCCESS
        )
    return HttpResponseRedirect(
        _next(request, _url(model_admin, "redis_tasks_dashboard_task", backend, task_id))
    )


@post_only
def cancel(
    model_admin: DashboardAdmin, request: HttpRequest, backend: str, task_id: str
) -> HttpResponse:
    """Cancel a task, waiting or running: it ends FAILED with TaskCancelled."""
    _require_manage(request)
    inspector = Inspector(_backend(backend))
    back = _next(request, _url(model_admin, "redis_tasks_dashboard_task", backend, task_id))
    if not _confirmed(request):
        lines = [f"Task {task_id} of backend {backend!r} will be stopped: a waiting task never "
                 "runs; a running one is cancelled by its worker within about a second (a sync "
                 "task at its next cancellation.check()). Its result becomes FAILED with "
                 "TaskCancelled. This cannot be undone (but the task can be retried "
                 "afterwards)."]  # fmt: skip
        return _confirm(model_admin, request, "Cancel this task?", lines, "Yes, cancel it", back)
    try:
        inspector.cancel(task_id)
    except (OperationRefused, redis.RedisError) as exc:
        model_admin.message_user(request, f"Not cancelled: {exc}", messages.ERROR)
    else:
        model_admin.message_user(request, f"Task {task_id} was cancelled.", messages.SUCCESS)
    return HttpResponseRedirect(back)


def _age(request: HttpRequest) -> float | None:
    """The purge age from the form: amount and unit (m, h, d), or "7d" in one field."""
    amount, unit = (request.POST.get("amount") or "").strip(), request.POST.get("unit") or ""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhd]?)", amount)
    if not match:
        return None
    unit = match[2] or unit or "d"
    if unit not in AGE_UNITS:
        return None
    return float(match[1]) * AGE_UNITS[unit]


@post_only
def purge(model_admin: DashboardAdmin, request: HttpRequest, backend: str) -> HttpResponse:
    """Delete the finished results (successful and failed) older than an age."""
    _require_manage(request)
    inspector = Inspector(_backend(backend))
    back = _next(request, overview_url(model_admin))
    older_than = _age(request)
    if older_than is None:
        model_admin.message_user(
            request, "Purge: give an age such as 7 days, 12 hours or 30 minutes.", messages.ERROR
        )
        return HttpResponseRedirect(back)
    try:
        if not _confirmed(request):
            preview = queries.purge_preview(inspector, older_than)
            lines = [
                f"This deletes the {preview.total} results of backend {backend!r} that finished "
                f"before {preview.cutoff:%Y-%m-%d %H:%M:%S} UTC ({preview.successful} "
                f"successful, {preview.failed} failed). Their results cannot be read again.",
            ]
            return _confirm(model_admin, request, "Purge finished results?", lines,
                            "Yes, purge them", back)  # fmt: skip
        removed = inspector.purge(older_than)
    except redis.RedisError as exc:
        model_admin.message_user(request, f"Not purged: {exc}", messages.ERROR)
    else:
        model_admin.message_user(
            request, f"Purged {removed} finished results of backend {backend!r}.", messages.SUCCESS
        )
    return HttpResponseRedirect(back)


@post_only
def pause(model_admin: DashboardAdmin, request: HttpRequest, backend: str) -> HttpResponse:
    """Pause a queue (no worker claims from it), or resume it (``resume=1``)."""
    _require_manage(request)
    inspector = Inspector(_backend(backend))
    back = _next(request, overview_url(model_admin))
    queue = request.POST.get("queue") or ""
    resume = request.POST.get("resume") == "1"
    try:
        if queue not in inspector.queues():
            model_admin.message_user(
                request, f"No queue {queue!r} in backend {backend!r}.", messages.ERROR
            )
            return HttpResponseRedirect(back)
        (inspector.resume if resume else inspector.pause)(queue)
    except redis.RedisError as exc:
        model_admin.message_user(request, f"Not done: {exc}", messages.ERROR)
        return HttpResponseRedirect(back)
    done = (
        "resumed: workers claim from it again"
        if resume
        else ("paused: no worker claims from it until it is resumed; enqueues go on")
    )
    model_admin.message_user(request, f"Queue {queue!r} {done}.", messages.SUCCESS)
    return HttpResponseRedirect(back)


@post_only
def drain(model_admin: DashboardAdmin, request: HttpRequest, backend: str) -> HttpResponse:
    """Cancel every waiting (ready or deferred) task of a queue."""
    _require_manage(request)
    inspector = Inspector(_backend(backend))
    back = _next(request, overview_url(model_admin))
    queue = request.POST.get("queue") or ""
    try:
        if queue not in inspector.queues():
            model_admin.message_user(
                request, f"Not drained: no queue {queue!r} in backend {backend!r}.",
                messages.ERROR,
            )  # fmt: skip
            return HttpResponseRedirect(back)
        if not _confirmed(request):
            ready, deferred = queries.waiting_counts(inspector, queue)
            lines = [
                f"This cancels the {ready + deferred} waiting tasks of queue {queue!r} in "
                f"backend {backend!r} ({ready} ready, {deferred} deferred): none of them will "
                "run, each result becomes FAILED with TaskCancelled.",
            ]
            return _confirm(model_admin, request, f"Drain queue {queue}?", lines,
                            "Yes, drain it", back)  # fmt: skip
        cancelled = queries.drain(inspector, queue)
        left = sum(queries.waiting_counts(inspector, queue))
    except redis.RedisError as exc:
        model_admin.message_user(request, f"Drain stopped: {exc}", messages.ERROR)
        return HttpResponseRedirect(back)
    if left:
        model_admin.message_user(
            request,
            f"Cancelled {cancelled} tasks of queue {queue!r}; {left} still wait (a drain from "
            "the dashboard stops after a few seconds): drain again, or use "
            f"`manage.py redis_tasks --backend {backend} drain {queue}`.",
            messages.WARNING,
        )
    else:
        model_admin.message_user(
            request, f"Drained queue {queue!r}: {cancelled} tasks cancelled.", messages.SUCCESS
        )
    return HttpResponseRedirect(back)
