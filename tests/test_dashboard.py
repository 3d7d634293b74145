"""The admin dashboard (redis_tasks.dashboard): permissions, pages, actions, cost at 100,000 tasks,
and a real headless Chromium that logs in, browses, retries and cancels."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.admin import AdminSite
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.test.utils import override_settings
from django.urls import path, reverse
from django.utils import timezone

from redis_tasks import series
from redis_tasks.compat import task_backends
from redis_tasks.dashboard import charts, queries
from redis_tasks.dashboard.admin import DashboardAdmin
from redis_tasks.dashboard.models import Dashboard
from redis_tasks.ops import Inspector
from tests import tasks
from tests.helpers import burst, wait_until

OVERVIEW = "admin:redis_tasks_dashboard_dashboard_changelist"
LIST = "admin:redis_tasks_dashboard_tasks"
DETAIL = "admin:redis_tasks_dashboard_task"
RETRY = "admin:redis_tasks_dashboard_retry"
CANCEL = "admin:redis_tasks_dashboard_cancel"
PURGE = "admin:redis_tasks_dashboard_purge"
DRAIN = "admin:redis_tasks_dashboard_drain"
PASSWORD = "correct horse battery staple"

# A project's own AdminSite (used with ROOT_URLCONF pointing here).
ops_site = AdminSite(name="ops")
ops_site.register(Dashboard, DashboardAdmin)
urlpatterns = [path("ops/", ops_site.urls)]


def inspector(alias: str = "default") -> Inspector:
    return Inspector(task_backends[alias])


def make_user(django_user_model: Any, name: str, *perms: str, **flags: Any) -> Any:
    flags = {"is_staff": True, "is_active": True, **flags}
    user = django_user_model.objects.create_user(name, password=PASSWORD, **flags)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="redis_tasks_dashboard", codename__in=perms
    ))  # fmt: skip
    return user


def logged_in(user: Any, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model: Any) -> Client:
    return logged_in(make_user(django_user_model, "viewer", "view_dashboard"))


@pytest.fixture
def manager(django_user_model: Any) -> Client:
    return logged_in(make_user(django_user_model, "manager", "view_dashboard", "manage_tasks"))


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def failed_task(message: str = "boom") -> str:
    result = tasks.fail.enqueue(message)
    burst()
    return str(result.id)


def task_fields(client: redis.Redis, task_id: str, alias: str = "default") -> dict[str, str]:
    key = task_backends[alias].store.keys.task(task_id)
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


# --- permissions -----------------------------------------------------------------------------


def page_urls(task_id: str = "0" * 32) -> list[str]:
    return [
        reverse(OVERVIEW),
        reverse(LIST) + "?backend=default&state=failed",
        reverse(DETAIL, args=["default", task_id]),
    ]


def action_posts(task_id: str = "0" * 32) -> list[tuple[str, dict[str, str]]]:
    return [
        (reverse(RETRY, args=["default", task_id]), {}),
        (reverse(CANCEL, args=["default", task_id]), {"confirm": "yes"}),
        (reverse(PURGE, args=["default"]), {"amount": "1", "unit": "d", "confirm": "yes"}),
        (reverse(DRAIN, args=["default"]), {"queue": "default", "confirm": "yes"}),
    ]


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_admin_login() -> None:
    client = Client()
    for url in page_urls():
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login") + "?next=")
    for url, data in action_posts():
        assert client.post(url, data)["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
def test_inactive_or_non_staff_users_with_the_permission_are_sent_to_login(
    django_user_model: Any,
) -> None:
    perms = ("view_dashboard", "manage_tasks")
    for user in (
        make_user(django_user_model, "not-staff", *perms, is_staff=False),
        make_user(django_user_model, "inactive", *perms, is_active=False),
    ):
        client = Client()
        client.force_login(user)
        for url in page_urls():
            assert client.get(url).status_code == 302


@pytest.mark.django_db
def test_staff_without_the_permission_get_403(
    django_user_model: Any, clean_redis: redis.Redis
) -> None:
    task_id = failed_task()
    client = logged_in(make_user(django_user_model, "staff"))
    for url in page_urls(task_id):
        assert client.get(url).status_code == 403
    for url, data in action_posts(task_id):
        assert client.post(url, data).status_code == 403
    assert task_fields(clean_redis, task_id)["status"] == "FAILED"
    # And the admin index does not list the dashboard.
    assert "Task dashboard" not in client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_view_permission_shows_the_pages_but_no_actions(
    viewer: Client, clean_redis: redis.Redis
) -> None:
    task_id = failed_task()
    for url in page_urls(task_id):
        response = viewer.get(url)
        assert response.status_code == 200, url
        assert 'data-action="retry"' not in response.content.decode()
    assert "Drain…" not in viewer.get(reverse(OVERVIEW)).content.decode()
    for url, data in action_posts(task_id):
        assert viewer.post(url, data).status_code == 403
    assert task_fields(clean_redis, task_id)["status"] == "FAILED"


@pytest.mark.django_db
def test_manage_permission_allows_viewing_and_acting(django_user_model: Any) -> None:
    client = logged_in(make_user(django_user_model, "ops", "manage_tasks"))
    task_id = failed_task()
    assert client.get(reverse(DETAIL, args=["default", task_id])).status_code == 200
    assert client.post(reverse(RETRY, args=["default", task_id])).status_code == 302


@pytest.mark.django_db
def test_superusers_see_everything_and_the_admin_index_links_the_dashboard(
    django_user_model: Any,
) -> None:
    admin = django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = logged_in(admin)
    index = client.get(reverse("admin:index")).content.decode()
    assert "Task dashboard" in index and reverse(OVERVIEW) in index
    assert client.get(reverse(OVERVIEW)).status_code == 200


@pytest.mark.django_db
def test_it_works_on_another_admin_site(viewer: Client) -> None:
    task_id = failed_task()
    with override_settings(ROOT_URLCONF=__name__):
        url = reverse(OVERVIEW, current_app="ops")
        assert url == "/ops/redis_tasks_dashboard/dashboard/"
        html = viewer.get(url).content.decode()
        assert (
            'href="/ops/redis_tasks_dashboard/dashboard/tasks/?backend=default&amp;state=' in html
        )
        listing = viewer.get("/ops/redis_tasks_dashboard/dashboard/tasks/?state=failed")
        assert f'href="/ops/redis_tasks_dashboard/dashboard/tasks/default/{task_id}/"' in (
            listing.content.decode()
        )
        assert (
            viewer.get(f"/ops/redis_tasks_dashboard/dashboard/tasks/default/{task_id}/").status_code
            == 200
        )


# --- pages -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_overview_counts_queues_workers_and_throughput(
    viewer: Client, background: Any, tmp_path: Path
) -> None:
    for i in range(3):
        tasks.add.enqueue(i, i)
    tasks.fail.enqueue()
    burst()  # 3 successful, 1 failed, all in the last minute
    tasks.add.enqueue(1, 1)
    tasks.add.using(queue_name="reports").enqueue(2, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3, 3)
    started, release = tmp_path / "started", tmp_path / "release"
    tasks.wait_for_file.using(queue_name="slow").enqueue(str(started), str(release))
    worker = background("default", queues=["slow"], concurrency=2)
    try:
        wait_until(started.exists)
        wait_until(lambda: inspector().workers() and inspector().workers()[0].in_flight)

        response = viewer.get(reverse(OVERVIEW))
        assert response.status_code == 200
        default = next(b for b in response.context["backends"] if b.alias == "default")
        assert default.error is None
        assert default.totals == {"ready": 2, "deferred": 1, "running": 1, "failed": 1,
                                  "successful": 3, "dead": 0}  # fmt: skip
        queues = {q["name"]: (q["ready"], q["deferred"]) for q in default.queues}
        assert queues["default"] == (1, 1) and queues["reports"] == (1, 0)
        assert default.throughput.successful_1m == 3 and default.throughput.failed_1m == 1
        [w] = default.workers
        assert w["id"] == worker.worker_id and w["pid"] == os.getpid()
        assert w["queues"] == ["slow"] and len(w["in_flight"]) == 1
        html = response.content.decode()
        assert worker.worker_id in html and "Finished last minute" in html
        for alias in ("default", "other", "retrying"):
            assert f'id="backend-{alias}"' in html
    finally:
        release.touch()


def chart_values(html: str, alias: str, kind: str) -> dict[str, str]:
    """A chart's lines in the page: name -> its total (counts) or latest value (depth)."""
    section = html.split(f'id="backend-{alias}"', 1)[1].split('class="rtd-section"', 1)[0]
    figure = section.split(f'data-chart="{kind}"', 1)[1].split("</figure>", 1)[0]
    return dict(re.findall(r'data-line="(\w+)" data-(?:total|latest)="(\d+)"', figure))


@pytest.mark.django_db
def test_the_overview_charts_the_last_hour(viewer: Client) -> None:
    for i in range(3):
        tasks.add.enqueue(i, i)
    tasks.fail.enqueue("one")
    tasks.fail.enqueue("two")
    burst()  # started 5: 3 succeeded, 2 failed
    tasks.add.enqueue(1, 1)
    tasks.add.using(queue_name="reports").enqueue(2, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3, 3)

    response = viewer.get(reverse(OVERVIEW))
    default = next(b for b in response.context["backends"] if b.alias == "default")
    assert default.hour is not None and default.hour.total("started") == 5
    html = response.content.decode()
    assert chart_values(html, "default", "throughput") == {
        "started": "5", "succeeded": "3", "failed": "2",
    }  # fmt: skip
    # The depth chart ends at the page's own counts: 3 waiting, none running.
    assert chart_values(html, "default", "depth") == {"waiting": "3", "running": "0"}
    assert chart_values(html, "other", "throughput") == {
        "started": "0", "succeeded": "0", "failed": "0",
    }  # fmt: skip
    # Accessible: an image with a title and a text summary.
    dom_id = "rtd-chart-default-throughput"
    assert (f'<svg id="{dom_id}" viewBox="0 0 480 150" role="img" '
            f'aria-labelledby="{dom_id}-title {dom_id}-desc">') in html  # fmt: skip
    title = "Tasks per minute, last hour, backend default"
    assert f'<title id="{dom_id}-title">{title}</title>' in html
    assert "In the last hour: started 5, succeeded 3, failed 2; at most " in html
    assert "<script" not in html.split('id="content-main"', 1)[1]  # no JavaScript


def test_a_chart_scales_to_round_numbers_and_leaves_gaps_where_nothing_was_sampled() -> None:
    assert [charts.nice_ceiling(n) for n in (1, 2, 3, 7, 10, 11, 99, 101)] == [
        1, 2, 5, 10, 10, 20, 100, 200,
    ]  # fmt: skip
    minutes = [series.Minute(m * 60_000) for m in range(60)]
    minutes[10] = series.Minute(10 * 60_000, started=7, succeeded=3, waiting=4, running=1)
    minutes[11] = series.Minute(11 * 60_000, waiting=6, running=0)
    minutes[30] = series.Minute(30 * 60_000, waiting=1, running=1)
    hour = series.LastHour(tuple(minutes))
    throughput = charts.throughput(hour, "a b")
    assert throughput.dom_id == "rtd-chart-a-b-throughput"
    assert [t.label for t in throughput.y_ticks] == ["0", "5", "10"]  # 7 rounds up to 10
    started = throughput.lines[0]
    assert (started.name, started.total, started.path.count("L")) == ("started", 7, 59)
    assert [c.title.split(": ", 1)[1] for c in throughput.columns] == [
        "started 7, succeeded 3, failed 0"
    ]
    depth = charts.depth(hour, "a")
    waiting = depth.lines[0]
    assert waiting.latest == 1 and [t.label for t in depth.y_ticks] == ["0", "5", "10"]
    # Two samples in a row make a segment; a lone one a dot (a zero-length segment).
    assert re.fullmatch(r"M[\d.]+ [\d.]+ L[\d.]+ [\d.]+ M[\d.]+ [\d.]+ l0 0", waiting.path)
    assert len(depth.columns) == 3 and depth.columns[0].title.endswith("waiting 4, running 1")
    empty = charts.depth(series.LastHour(tuple(series.Minute(m * 60_000) for m in range(60))), "a")
    assert empty.lines[0].path == "" and empty.summary == "No depth known."


@pytest.mark.django_db
def test_overview_auto_refresh(viewer: Client) -> None:
    assert 'http-equiv="refresh"' not in viewer.get(reverse(OVERVIEW)).content.decode()
    html = viewer.get(reverse(OVERVIEW) + "?refresh=15").content.decode()
    assert '<meta http-equiv="refresh" content="15">' in html


@pytest.mark.django_db
def test_task_list_filters_by_state_queue_and_task_path_and_pages(viewer: Client) -> None:
    backend = task_backends["other"]  # no maxsize
    added = backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(120)])
    echoed = backend.enqueue_many(tasks.echo.using(queue_name="high"), [(("x",), {})] * 3)
    url = reverse(LIST)

    first = viewer.get(url, {"backend": "other", "state": "ready", "queue": "default"})
    page = first.context["page"]
    assert [r.summary.id for r in page.rows] == [str(r.id) for r in added[:50]]
    assert page.total == 120 and page.has_next and not page.scanned
    third = viewer.get(url, {"backend": "other", "state": "ready", "queue": "default",
                             "offset": 100, "per_page": 25})  # fmt: skip
    assert [r.summary.id for r in third.context["page"].rows] == [str(r.id) for r in added[100:]]
    assert not third.context["page"].has_next

    # All queues: merged in the order they run (priority, then enqueue order).
    merged = viewer.get(url, {"backend": "other", "state": "ready", "per_page": 200})
    ids = [r.summary.id for r in merged.context["page"].rows]
    assert ids == [str(r.id) for r in [*added, *echoed]]
    assert dict((s, n) for s, _, n, _ in merged.context["state_tabs"])["ready"] == 123

    by_path = viewer.get(url, {"backend": "other", "state": "ready", "task": "tests.tasks.echo"})
    page = by_path.context["page"]
    assert page.scanned and [r.summary.id for r in page.rows] == [str(r.id) for r in echoed]
    html = by_path.content.decode()
    assert "3 matches among positions 1\u2013123 of 123" in html

    # Finished tasks, filtered by queue within the scanned window.
    burst("other")
    done = viewer.get(url, {"backend": "other", "state": "successful", "queue": "high"})
    assert sorted(r.summary.id for r in done.context["page"].rows) == sorted(
        str(r.id) for r in echoed
    )
    assert all(r.summary.queue == "high" for r in done.context["page"].rows)
    # An unknown backend is a 404; an unknown state falls back to ready.
    assert viewer.get(url, {"backend": "nope"}).status_code == 404
    assert viewer.get(url, {"backend": "other", "state": "bogus"}).context["state"] == "ready"


@pytest.mark.django_db
def test_task_list_pages_of_failed_dead_and_deferred_tasks(
    viewer: Client, clean_redis: redis.Redis
) -> None:
    failed = [failed_task(f"number {i}") for i in range(3)]
    later = timezone.now() + timedelta(hours=1)
    deferred = tasks.add.using(run_after=later).enqueue(1, 2)
    response = viewer.get(reverse(LIST), {"backend": "default", "state": "failed"})
    assert [r.summary.id for r in response.context["page"].rows] == failed[::-1]  # newest first
    assert response.context["page"].rows[0].finished_at is not None
    response = viewer.get(reverse(LIST), {"backend": "default", "state": "deferred"})
    [row] = response.context["page"].rows
    assert row.summary.id == str(deferred.id)
    assert abs((row.run_after - later).total_seconds()) < 0.01
    # A dead-lettered entry (moved aside) is listed under "dead".
    keys = task_backends["default"].store.keys
    clean_redis.zadd(keys.dead, {failed[0]: time.time() * 1000})
    response = viewer.get(reverse(LIST), {"backend": "default", "state": "dead"})
    assert [r.summary.id for r in response.context["page"].rows] == [failed[0]]
    # Dead letters may hold ids no URL can carry: listed, without links.
    clean_redis.zadd(keys.dead, {"weird/id": 1, "": 2})
    response = viewer.get(reverse(LIST), {"backend": "default", "state": "dead"})
    assert response.status_code == 200 and b"weird/id" in response.content


@pytest.mark.django_db
def test_task_detail_shows_arguments_attempts_tracebacks_and_return_value(
    viewer: Client,
) -> None:
    ok = tasks.echo.enqueue(1, "two", key={"a": None})
    bad = tasks.fail.enqueue("it broke")
    burst()
    response = viewer.get(reverse(DETAIL, args=["default", str(ok.id)]))
    task = response.context["task"]
    assert task["status"] == "SUCCESSFUL" and task["state"] == "successful"
    assert json.loads(response.context["pretty"]["args"]) == [1, "two"]
    assert json.loads(response.context["pretty"]["kwargs"]) == {"key": {"a": None}}
    assert json.loads(response.context["pretty"]["return_value"]) == {
        "args": [1, "two"], "kwargs": {"key": {"a": None}},
    }  # fmt: skip
    assert not response.context["can_retry"] and not response.context["can_cancel"]

    response = viewer.get(reverse(DETAIL, args=["default", str(bad.id)]))
    html = response.content.decode()
    task = response.context["task"]
    assert task["state"] == "failed" and task["attempts"] == 1 and len(task["worker_ids"]) == 1
    assert task["worker_ids"][0] in html
    assert "Traceback (most recent call last)" in html and "ValueError: it broke" in html
    assert response.context["can_retry"]

    missing = viewer.get(reverse(DETAIL, args=["default", "f" * 32]))
    assert missing.status_code == 404 and "no task" in missing.content.decode()


@pytest.mark.django_db
def test_task_detail_of_a_broken_payload_shows_its_raw_fields(
    viewer: Client, clean_redis: redis.Redis
) -> None:
    key = task_backends["default"].store.keys.task("broken")
    clean_redis.hset(key, mapping={"path": "no.such.task", "queue": "default", "status": "READY"})
    response = viewer.get(reverse(DETAIL, args=["default", "broken"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "cannot be read" in html and "no.such.task" in html


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_retry_re_enqueues_a_failed_task(manager: Client, clean_redis: redis.Redis) -> None:
    task_id = failed_task()
    response = manager.post(reverse(RETRY, args=["default", task_id]))
    assert response.status_code == 302
    assert response["Location"] == reverse(DETAIL, args=["default", task_id])
    assert texts(response) == [f"Task {task_id} was re-enqueued and will run again."]
    assert task_fields(clean_redis, task_id)["status"] == "READY"
    keys = task_backends["default"].store.keys
    assert clean_redis.zscore(keys.ready("default"), task_id) is not None
    burst()
    assert task_fields(clean_redis, task_id)["status"] == "FAILED"  # it ran (and failed) again


@pytest.mark.django_db
def test_refused_actions_report_the_reason(manager: Client) -> None:
    ok = tasks.add.enqueue(1, 1)
    burst()
    response = manager.post(reverse(RETRY, args=["default", str(ok.id)]))
    [text] = texts(response)
    assert text.startswith("Not retried: ") and "only a failed or dead-lettered task" in text
    response = manager.post(reverse(CANCEL, args=["default", str(ok.id)]), {"confirm": "yes"})
    text = texts(response)[-1]  # (the first message was never displayed: still queued)
    assert text.startswith("Not cancelled: ") and "only a task waiting or running" in text
    response = manager.post(reverse(RETRY, args=["default", "f" * 32]))
    assert "no such task" in texts(response)[-1]


@pytest.mark.django_db
def test_cancel_asks_for_confirmation_then_cancels(
    manager: Client, clean_redis: redis.Redis
) -> None:
    result = tasks.add.enqueue(1, 1)
    task_id = str(result.id)
    url = reverse(CANCEL, args=["default", task_id])
    listing = reverse(LIST) + "?backend=default&state=ready"

    asked = manager.post(url, {"next": listing})
    assert asked.status_code == 200
    html = asked.content.decode()
    assert "Cancel this task?" in html and 'name="confirm" value="yes"' in html
    assert f'value="{listing}"' in html.replace("&amp;", "&")
    assert task_fields(clean_redis, task_id)["status"] == "READY"  # nothing done yet

    done = manager.post(url, {"next": listing, "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == listing
    assert texts(done) == [f"Task {task_id} was cancelled."]
    fields = task_fields(clean_redis, task_id)
    assert fields["status"] == "FAILED" and "TaskCancelled" in fields["errors"]


@pytest.mark.django_db
def test_purge_deletes_results_older_than_an_age_after_confirmation(
    manager: Client, clean_redis: redis.Redis
) -> None:
    old = [tasks.add.enqueue(i, i) for i in range(3)]
    new = tasks.add.enqueue(9, 9)
    tasks.fail.enqueue()
    burst()
    keys = task_backends["default"].store.keys
    two_days_ago = (time.time() - 2 * 86400) * 1000
    clean_redis.zadd(keys.done("SUCCESSFUL"), {str(r.id): two_days_ago for r in old}, xx=True)
    url = reverse(PURGE, args=["default"])

    asked = manager.post(url, {"amount": "1", "unit": "d"})
    assert asked.status_code == 200
    assert "This deletes the 3 results" in asked.content.decode()
    assert all(clean_redis.exists(keys.task(str(r.id))) for r in old)

    done = manager.post(url, {"amount": "1", "unit": "d", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == reverse(OVERVIEW)
    assert texts(done) == ["Purged 3 finished results of backend 'default'."]
    assert not any(clean_redis.exists(keys.task(str(r.id))) for r in old)
    assert clean_redis.exists(keys.task(str(new.id)))
    assert clean_redis.zcard(keys.done("FAILED")) == 1

    bad = manager.post(url, {"amount": "soon", "confirm": "yes"})
    assert "give an age" in texts(bad)[-1]


@pytest.mark.django_db
def test_drain_cancels_every_waiting_task_of_a_queue_after_confirmation(
    manager: Client, clean_redis: redis.Redis
) -> None:
    drained = [tasks.add.using(queue_name="q1").enqueue(i, i) for i in range(4)]
    later = tasks.add.using(queue_name="q1", run_after=timezone.now() + timedelta(hours=1))
    drained.append(later.enqueue(0, 0))
    kept = tasks.add.using(queue_name="q2").enqueue(1, 1)
    url = reverse(DRAIN, args=["default"])

    asked = manager.post(url, {"queue": "q1"})
    assert asked.status_code == 200
    assert "This cancels the 5 waiting tasks of queue &#x27;q1&#x27;" in asked.content.decode()

    done = manager.post(url, {"queue": "q1", "confirm": "yes"})
    assert done.status_code == 302
    assert texts(done) == ["Drained queue 'q1': 5 tasks cancelled."]
    for result in drained:
        assert task_fields(clean_redis, str(result.id))["status"] == "FAILED"
    assert task_fields(clean_redis, str(kept.id))["status"] == "READY"

    unknown = manager.post(url, {"queue": "nope", "confirm": "yes"})
    assert texts(unknown)[-1] == "Not drained: no queue 'nope' in backend 'default'."


@pytest.mark.django_db
def test_a_drain_stops_after_its_time_budget(
    manager: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_backends["other"].enqueue_many(tasks.add, [((i, i), {}) for i in range(450)])
    monkeypatch.setattr(queries, "DRAIN_BUDGET_SECONDS", 0.0)
    done = manager.post(reverse(DRAIN, args=["other"]), {"queue": "default", "confirm": "yes"})
    [text] = texts(done)
    assert text.startswith("Cancelled 200 tasks of queue 'default'; 250 still wait")


@pytest.mark.django_db
def test_actions_are_post_only(manager: Client, clean_redis: redis.Redis) -> None:
    task_id = failed_task()
    waiting = str(tasks.add.enqueue(1, 1).id)
    for url in (
        reverse(RETRY, args=["default", task_id]),
        reverse(CANCEL, args=["default", waiting]) + "?confirm=yes",
        reverse(PURGE, args=["default"]) + "?amount=0&confirm=yes",
        reverse(DRAIN, args=["default"]) + "?queue=default&confirm=yes",
    ):
        assert manager.get(url).status_code == 405
    assert task_fields(clean_redis, task_id)["status"] == "FAILED"
    assert task_fields(clean_redis, waiting)["status"] == "READY"


@pytest.mark.django_db
def test_actions_need_the_csrf_token(django_user_model: Any, clean_redis: redis.Redis) -> None:
    client = logged_in(make_user(django_user_model, "m", "view_dashboard", "manage_tasks"), True)
    task_id = failed_task()
    waiting = str(tasks.add.enqueue(1, 1).id)
    for url, data in [*action_posts(task_id), (reverse(CANCEL, args=["default", waiting]),
                                                 {"confirm": "yes"})]:  # fmt: skip
        assert client.post(url, data).status_code == 403, url
    assert task_fields(clean_redis, task_id)["status"] == "FAILED"
    assert task_fields(clean_redis, waiting)["status"] == "READY"

    # With the token of the page's form, the same POST goes through.
    page = client.get(reverse(DETAIL, args=["default", task_id])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token
    response = client.post(reverse(RETRY, args=["default", task_id]),
                           {"csrfmiddlewaretoken": token[1]})  # fmt: skip
    assert response.status_code == 302
    assert task_fields(clean_redis, task_id)["status"] == "READY"


@pytest.mark.django_db
def test_next_must_stay_on_this_site(manager: Client) -> None:
    task_id = failed_task()
    response = manager.post(reverse(RETRY, args=["default", task_id]),
                            {"next": "https://evil.example/"})  # fmt: skip
    assert response["Location"] == reverse(DETAIL, args=["default", task_id])


# --- cost with 100,000 tasks -----------------------------------------------------------------


def redis_cost(client: redis.Redis, request: Any) -> tuple[int, int]:
    """Commands the server ran, and bytes it sent, while ``request()`` ran (INFO excluded)."""

    def snapshot() -> tuple[int, int]:
        stats = client.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
        return calls, int(client.info("stats")["total_net_output_bytes"])

    calls, sent = snapshot()
    request()
    after_calls, after_sent = snapshot()
    # The first snapshot's two INFO replies count in the second's byte total.
    return after_calls - calls, after_sent - sent


@pytest.mark.django_db
@pytest.mark.timeout(300)
def test_pages_stay_cheap_with_100000_tasks_in_a_queue(
    manager: Client, clean_redis: redis.Redis
) -> None:
    backend = task_backends["other"]  # no maxsize
    for start in range(0, 100_000, 5_000):
        backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(start, start + 5_000)])
    backend.enqueue_many(tasks.echo.using(queue_name="high"), [((i,), {}) for i in range(10)])
    ready = clean_redis.zrange(backend.store.keys.ready("default"), 0, -1)
    assert len(ready) == 100_000

    def get(url: str, **params: Any) -> Any:
        holder: list[Any] = []
        cost = redis_cost(clean_redis, lambda: holder.append(manager.get(url, params)))
        assert holder[0].status_code == 200, url
        return holder[0], cost

    response, (commands, sent) = get(reverse(OVERVIEW))
    other = next(b for b in response.context["backends"] if b.alias == "other")
    assert other.totals["ready"] == 100_010
    assert "100,000" in response.content.decode()
    # About twenty commands per backend (nine RedisBackends in the test settings), two of them
    # the charts' last hour.
    assert commands < 25 * len(response.context["backends"]), commands
    assert sent < 20_000, sent

    response, (commands, sent) = get(reverse(LIST), backend="other", state="ready", queue="default")
    assert [r.summary.id for r in response.context["page"].rows] == [i.decode() for i in ready[:50]]
    assert commands < 70 and sent < 40_000, (commands, sent)

    # The last page costs the same as the first: a window by rank, not a read from the head.
    response, (commands, sent) = get(
        reverse(LIST), backend="other", state="ready", queue="default", offset=99_950
    )
    assert [r.summary.id for r in response.context["page"].rows] == [
        i.decode() for i in ready[99_950:]
    ]
    assert commands < 70 and sent < 40_000, (commands, sent)

    # All queues (merged): fine near the head, refused deep down (choose a queue).
    response, (commands, sent) = get(reverse(LIST), backend="other", state="ready")
    assert len(response.context["page"].rows) == 50
    assert commands < 70 and sent < 40_000, (commands, sent)
    response, (commands, sent) = get(reverse(LIST), backend="other", state="ready", offset=50_000)
    assert response.context["page"].too_deep and commands < 20 and sent < 10_000

    # A task-path filter reads one window of positions, not the queue.
    response, (commands, sent) = get(
        reverse(LIST), backend="other", state="ready", queue="default", task="tests.tasks.echo"
    )
    page = response.context["page"]
    assert page.rows == [] and page.end == queries.SCAN_WINDOW and page.has_next
    assert commands < queries.SCAN_WINDOW + 50 and sent < 400_000, (commands, sent)

    task_id = ready[77_777].decode()
    response, (commands, sent) = get(reverse(DETAIL, args=["other", task_id]))
    assert response.context["task"]["state"] == "ready"
    assert commands < 20 and sent < 10_000, (commands, sent)


# --- a real browser --------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Screenshots go to a temp dir; REDIS_TASKS_SCREENSHOTS=docs/images refreshes the docs' ones.
SCREENSHOTS = Path(os.environ.get("REDIS_TASKS_SCREENSHOTS") or tempfile.mkdtemp(prefix="shots-"))


@pytest.fixture(scope="session")
def admin_static() -> Iterator[None]:
    """Serve the admin's CSS from the live server (the test settings have no staticfiles app):
    the live server's static handler reads STATIC_URL when it starts, so this comes first."""
    import django.contrib.admin

    static = Path(django.contrib.admin.__file__).parent / "static"
    with override_settings(STATIC_URL="/static/", STATIC_ROOT=str(static)):
        yield


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("The browser test needs Chromium: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="redis-tasks-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900",
        "--force-device-scale-factor=1", "--lang=en-US",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, height: int | None = None) -> Path:
    """The page 1280 px wide (CSS pixels, scale 1), as tall as its content or ``height``."""

    def emulate(h: int) -> None:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": h, "deviceScaleFactor": 1,
                                "mobile": False})  # fmt: skip

    emulate(800)
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    emulate(min(height or full, 2400))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"dashboard-{name}.png"
    assert driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_in_a_real_browser(
    admin_static: None, live_server: Any, browser: Any, background: Any, django_user_model: Any,
    clean_redis: redis.Redis, tmp_path: Path,
) -> None:  # fmt: skip
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    make_user(django_user_model, "operator", "view_dashboard", "manage_tasks",
              first_name="Olga")  # fmt: skip
    # Some history: successes and failures, then tasks waiting and one running.
    for i in range(5):
        tasks.add.enqueue(i, i * 10)
    tasks.echo.enqueue("report.pdf", to=["ops@example.com"])
    failed = tasks.fail.enqueue("payment gateway timed out")
    tasks.fail.enqueue("no such customer")
    burst()
    waiting = [tasks.add.enqueue(i, 1) for i in range(3)]
    tasks.echo.using(queue_name="emails").enqueue("welcome", user=7)
    tasks.echo.using(queue_name="emails", priority=5).enqueue("digest", user=8)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=2)).enqueue(40, 2)
    started, release = tmp_path / "started", tmp_path / "release"
    tasks.wait_for_file.using(queue_name="slow").enqueue(str(started), str(release))
    background("default", queues=["slow"], concurrency=4)
    wait_until(started.exists)
    wait_until(lambda: any(w.in_flight for w in inspector().workers()))
    keys = task_backends["default"].store.keys
    wait = WebDriverWait(browser, 20)
    # Chromium may answer a lookup made while a page is still being put in place with "Node
    # with given id does not belong to the document" (seen once in CI): look again then.
    tolerant = WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,))

    def click(selector: str) -> None:
        """Click, and wait for the page it leads to (every click here loads a page). The
        lookups and the click itself are retried through that answer: it means the element
        was not there to click yet."""
        page = tolerant.until(lambda driver: driver.find_element(By.TAG_NAME, "html"))

        def clicked(driver: Any) -> bool:
            element = ec.element_to_be_clickable((By.CSS_SELECTOR, selector))(driver)
            if not element:
                return False
            element.click()
            return True

        tolerant.until(clicked)
        wait.until(ec.staleness_of(page))

    def heading() -> str:
        found = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#content h1")))
        return str(found.text)

    try:
        browser.get(live_server.url + "/static/admin/css/base.css")  # the admin's CSS is served
        assert "--primary" in browser.page_source
        # Log in through the admin login form (the dashboard sends us there first).
        browser.get(live_server.url + reverse(OVERVIEW))
        wait.until(ec.presence_of_element_located((By.ID, "id_username")))
        assert "/admin/login/" in browser.current_url
        browser.find_element(By.ID, "id_username").send_keys("operator")
        browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
        click("#login-form input[type=submit]")
        assert heading() == "Task dashboard"
        expected = {"ready": "5", "deferred": "1", "running": "1", "failed": "2",
                    "successful": "6", "dead": "0"}  # fmt: skip

        def cards() -> dict[str, str]:  # read in one script: the page may still be settling
            pairs = browser.execute_script(
                "return Array.from(document.querySelectorAll('#backend-default a.rtd-card'))"
                ".map(c => [c.dataset.state, c.querySelector('.rtd-n').textContent.trim()])"
            )
            return dict(pairs)

        settled = WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,))
        with contextlib.suppress(TimeoutException):
            settled.until(lambda _: cards() == expected)
        assert cards() == expected
        backend = browser.find_element(By.ID, "backend-default")
        assert backend.find_element(By.CSS_SELECTOR, "[data-throughput]").text == "8"
        assert len(backend.find_elements(By.CSS_SELECTOR, "table.rtd-workers tbody tr")) == 1

        # The charts: drawn, and their numbers are the known counts. Started: the eight the
        # burst ran and the one running; the depth ends at the cards' counts.
        def chart(kind: str) -> dict[str, str]:
            pairs = browser.execute_script(
                "return Array.from(document.querySelectorAll("
                f"'#backend-default figure[data-chart={kind}] path[data-line]'))"
                ".map(p => [p.dataset.line, p.dataset.total ?? p.dataset.latest])"
            )
            return dict(pairs)

        assert chart("throughput") == {"started": "9", "succeeded": "6", "failed": "2"}
        assert chart("depth") == {"waiting": "6", "running": "1"}
        svg = backend.find_element(By.CSS_SELECTOR, "figure[data-chart=throughput] svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 80, svg.size
        rise = "return arguments[0].querySelector('path[data-line=started]').getBBox().height"
        assert browser.execute_script(rise, svg) > 10  # a line going up to the burst
        title = svg.find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert title == "Tasks per minute, last hour, backend default"
        legend = backend.find_element(By.CSS_SELECTOR, "figure[data-chart=throughput] figcaption")
        assert "Started 9" in legend.text and "Failed 2" in legend.text
        screenshot(browser, "overview", height=1180)

        # The list of ready tasks, from the overview's card; cancel the first one.
        click('#backend-default a.rtd-card[data-state="ready"]')
        assert heading() == "Ready tasks · default"
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        listed = [r.get_attribute("data-task-id") for r in rows]
        assert len(listed) == 5 and {str(r.id) for r in waiting} <= set(listed)
        screenshot(browser, "list")
        victim = str(waiting[0].id)
        click(f'tr[data-task-id="{victim}"] input[data-action="cancel"]')
        assert heading() == "Cancel this task?"
        click('input[data-action="confirm"]')
        message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
        assert message.text == f"Task {victim} was cancelled."
        assert heading() == "Ready tasks · default"
        assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-task-id="{victim}"]')
        assert clean_redis.zscore(keys.ready("default"), victim) is None
        fields = task_fields(clean_redis, victim)
        assert fields["status"] == "FAILED" and "TaskCancelled" in fields["errors"]

        # The failed tasks, one of them in detail; retry it.
        click('.rtd-tabs a[data-state="failed"]')
        assert heading() == "Failed tasks · default"
        target = str(failed.id)
        click(f'tr[data-task-id="{target}"] td a')
        assert heading() == f"Task {target}"
        tb = browser.find_element(By.CSS_SELECTOR, "pre.rtd-traceback").text
        assert "ValueError: payment gateway timed out" in tb
        screenshot(browser, "detail")
        click('input[data-action="retry"]')
        message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
        assert message.text == f"Task {target} was re-enqueued and will run again."
        assert task_fields(clean_redis, target)["status"] == "READY"
        assert clean_redis.zscore(keys.ready("default"), target) is not None
        assert clean_redis.zscore(keys.done("FAILED"), target) is None
    finally:
        release.touch()
