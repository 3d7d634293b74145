"""A smoke test of the installed wheel, run by scripts/check-package from a directory outside
the source tree: the package imports from site-packages, its checks pass, a task is enqueued,
run by a burst worker and read back, and a chord and a wait work."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import django
from django.conf import settings

import redis_tasks
from redis_tasks.testing import RedisServer

HERE = Path(__file__).resolve().parent
assert "site-packages" in redis_tasks.__file__, f"not the installed wheel: {redis_tasks.__file__}"
(HERE / "smoke_tasks.py").write_text(
    "try:\n    from django.tasks import task\nexcept ImportError:\n"
    "    from django_tasks import task\n\n\n"
    "@task()\ndef add(a: int, b: int) -> int:\n    return a + b\n\n\n"
    "@task()\ndef total(values: list[int]) -> int:\n    return sum(values)\n"
)
sys.path.insert(0, str(HERE))

with RedisServer() as server:
    apps = ["django.contrib.contenttypes", "django.contrib.auth", "redis_tasks"]
    if importlib.util.find_spec("django.tasks") is None:
        apps.insert(0, "django_tasks")  # Django 5.2: the backport
    backend = {"BACKEND": "redis_tasks.backend.RedisBackend", "LOCATION": f"{server.url}/0"}
    settings.configure(
        INSTALLED_APPS=apps,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TASKS={"default": {**backend, "autostart": False}},
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    from redis_tasks.waiting import wait
    from redis_tasks.workflows import chord, step

    smoke_tasks = importlib.import_module("smoke_tasks")
    call_command("check", fail_level="WARNING")
    result = smoke_tasks.add.enqueue(2, 3)
    members = [step(smoke_tasks.add, i, i) for i in range(5)]
    handle = chord(members, step(smoke_tasks.total)).enqueue()
    call_command("redis_tasks_worker", burst=True, verbosity=0)
    assert wait(result, timeout=5).return_value == 5, result.status
    assert handle.wait(timeout=5)[-1].return_value == 20
    print(f"package smoke test passed: django-redis-tasks {redis_tasks.__version__} on Django "
          f"{django.get_version()}, from {Path(redis_tasks.__file__).parent}")  # fmt: skip
