"""What a newcomer meets first: `manage.py check` on every Django, one clear line when Redis is
down (commands, dashboard, a burst worker that gives up), options anywhere on the command line,
and progress bars that stay out of files and out of other lines."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from redis_tasks.progress_line import CLEAR_LINE, ProgressLine, keep_logs_apart, render
from tests import tasks
from tests.helpers import ROOT, child_env, manage
from tests.redis_server import free_port


def django(*args: str, settings: str = "tests.settings", timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings", settings],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_manage_py_check_reports_a_typo_in_the_options() -> None:
    # A fresh process, as `manage.py check` runs: nothing has imported the framework yet.
    done = django("check", settings="tests.settings_typo")
    assert done.returncode != 0
    assert "redis_tasks.E001" in done.stderr and "Did you mean 'maxsize'?" in done.stderr


def test_manage_py_check_passes_on_the_readme_settings() -> None:
    done = django("check")
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


@pytest.fixture
def unreachable(settings: Any) -> str:
    location = f"redis://127.0.0.1:{free_port()}/0"
    settings.TASKS = {"default": {"BACKEND": "redis_tasks.backend.RedisBackend",
                                  "LOCATION": location}}  # fmt: skip
    return location


@pytest.mark.parametrize(
    "action",
    [["status"], ["list", "failed"], ["show", "x" * 32], ["retry", "--yes", "x" * 32],
     ["cancel", "--yes", "x" * 32], ["purge", "--older-than", "1d", "--yes"],
     ["drain", "default", "--yes"]],
)  # fmt: skip
def test_every_command_says_redis_is_down_in_one_line(unreachable: str, action: list[str]) -> None:
    with pytest.raises(CommandError) as raised:
        call_command("redis_tasks", *action, stdout=io.StringIO(), stderr=io.StringIO())
    message = str(raised.value)
    assert message.startswith("Redis failed: Error 111 connecting") and "\n" not in message
    assert unreachable in message and "check that Redis is running" in message


def test_a_command_with_redis_down_exits_non_zero_without_a_traceback() -> None:
    done = django("redis_tasks", "status", settings="tests.settings_unreachable")
    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: Redis failed:")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_options_are_accepted_after_the_action(clean_redis: Any) -> None:
    tasks.add.enqueue(1, 2)
    out = io.StringIO()
    call_command("redis_tasks", "status", "--json", "--backend", "default", stdout=out)
    assert out.getvalue().startswith("[")  # JSON, though --json came after the action
    done = django("redis_tasks", "status", "--json", "-v", "2")  # --settings after it too
    assert done.returncode == 0, done.stderr
    assert '"backend": "default"' in done.stdout


@pytest.mark.django_db
def test_the_dashboard_task_page_says_redis_is_down(unreachable: str, admin_client: Client) -> None:
    page = reverse("admin:redis_tasks_dashboard_task", args=["default", "x" * 32])
    response = admin_client.get(page)
    assert response.status_code == 503
    assert "Redis is not reachable" in response.content.decode()
    retry = reverse("admin:redis_tasks_dashboard_retry", args=["default", "x" * 32])
    followed = admin_client.post(retry, {"next": page}, follow=True)
    assert followed.status_code == 503  # where Retry leads during an outage: a page, not a 500
    assert "Not retried" in followed.content.decode()


def test_a_burst_worker_gives_up_when_redis_stays_unreachable() -> None:
    started = time.monotonic()
    done = django("redis_tasks_worker", "--burst", "--give-up-after", "1",
                  settings="tests.settings_unreachable", timeout=30)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "unreachable for" in done.stderr and "a burst worker gives up" in done.stderr
    assert time.monotonic() - started < 20


def test_progress_with_nothing_to_do_says_so() -> None:
    assert render(0, 0, 1.0) == "no tasks due"
    proc = manage("redis_tasks_worker", "--burst", "--progress")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "no tasks due" in out and "0/0" not in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_line_never_lands_inside_the_progress_bar() -> None:
    screen = Terminal()
    bar = ProgressLine(screen)
    logger = logging.getLogger("redis_tasks.test_progress")
    handler = logging.StreamHandler(screen)
    logger.addHandler(handler)
    try:
        with keep_logs_apart(bar, ["redis_tasks.test_progress"]):
            bar.draw(render(1, 9, 1.0))
            logger.warning("Redis of 'default' is back")
            bar.draw(render(2, 8, 1.0))
        logger.warning("after the bar")  # the filter is gone with the bar
    finally:
        logger.removeHandler(handler)
    text = screen.getvalue()
    # The bar was wiped before the record, which starts at the line's beginning.
    assert "1/10 tasks" in text.split(CLEAR_LINE)[1]
    assert CLEAR_LINE + "Redis of 'default' is back\n" in text
    assert text.endswith("after the bar\n")


def test_without_a_terminal_the_bar_is_plain_lines() -> None:
    file = io.StringIO()
    bar = ProgressLine(file)
    bar.draw(render(1, 1, 1.0))
    bar.draw(render(1, 1, 1.0))  # unchanged, and within a second: not written again
    bar.finish(render(2, 0, 2.0))
    assert CLEAR_LINE not in file.getvalue()
    assert file.getvalue().count("\n") == 2
