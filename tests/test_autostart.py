"""Autostart: a background worker with the Django server, once per server process, never in
other management commands."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from redis_tasks.autostart import is_server_process
from redis_tasks.compat import TaskResultStatus
from tests import tasks
from tests.helpers import ROOT, child_env, manage, wait_until
from tests.redis_server import free_port


def refreshed(result: Any) -> Any:
    result.refresh()
    return result


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["manage.py", "runserver"], {}, False),  # the autoreloader's parent
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["/x/django/__main__.py", "runserver", "--noreload"], {}, True),
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "shell"], {}, False),
        (["manage.py", "test"], {}, False),
        (["manage.py", "redis_tasks_worker"], {}, False),
        (["django-admin", "check"], {}, False),
        (["/usr/bin/pytest"], {}, False),  # no server entry point on the stack
        (["/venv/lib/uvicorn/__main__.py", "app:app"], {}, False),  # decided by the stack
    ],
)
def test_which_processes_are_servers(
    argv: list[str], env: dict[str, str], expected: bool, monkeypatch: Any
) -> None:
    monkeypatch.delenv("RUN_MAIN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_server_process(argv) is expected


def _run_in_child(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


PROBE = "import redis_tasks.autostart as a; print(a.started())"


def test_management_commands_do_not_start_a_worker() -> None:
    proc = manage("shell", "-c", PROBE)
    out, _ = proc.communicate(timeout=60)
    assert out.strip().splitlines()[-1] == "False"


def test_get_wsgi_application_starts_a_worker() -> None:
    assert _run_in_child(f"import tests.wsgi; {PROBE}") == "True"
    assert _run_in_child(f"import tests.asgi; {PROBE}") == "True"


def test_autostart_can_be_turned_off() -> None:
    assert (
        _run_in_child(
            f"import tests.wsgi; {PROBE}", DJANGO_SETTINGS_MODULE="tests.settings_no_autostart"
        )
        == "False"
    )
    assert _run_in_child(f"import tests.wsgi; {PROBE}", REDIS_TASKS_AUTOSTART="0") == "False"


def _serve(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env(),
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("server", "runs_in"),
    [
        (["-m", "django", "runserver", "--noreload", "{host}:{port}"], "server"),
        # With the autoreloader only its child serves, so only the child runs tasks.
        (["-m", "django", "runserver", "{host}:{port}"], "child"),
        (["-m", "uvicorn", "tests.asgi:application", "--port", "{port}"], "server"),
        (
            [
                "-m",
                "gunicorn",
                "tests.wsgi:application",
                "--workers",
                "2",
                "--bind",
                "{host}:{port}",
            ],
            "child",
        ),
    ],
    ids=["runserver-noreload", "runserver", "uvicorn", "gunicorn"],
)
def test_servers_run_tasks_in_the_background(server: list[str], runs_in: str) -> None:
    port = free_port()
    command = [arg.format(host="127.0.0.1", port=port) for arg in server]
    proc = _serve([sys.executable, *command])
    try:
        results = [tasks.add.enqueue(i, i) for i in range(10)]
        wait_until(
            lambda: all(refreshed(r).status == TaskResultStatus.SUCCESSFUL for r in results),
            timeout=30,
        )
        assert [r.return_value for r in results] == [2 * i for i in range(10)]
        pids = {int(r.worker_ids[0].split(":")[1]) for r in results}
        if runs_in == "server":
            assert pids == {proc.pid}
        else:
            assert proc.pid not in pids
    finally:
        proc.terminate()
        proc.wait(20)
