"""One compat module imports the framework; a missing backport is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, child_env

SRC = ROOT / "src" / "redis_tasks"


def test_only_compat_imports_the_framework() -> None:
    importers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(
            line.lstrip().startswith(
                (
                    "from django.tasks",
                    "import django.tasks",
                    "from django_tasks",
                    "import django_tasks",
                )
            )
            for line in path.read_text().splitlines()
        )
    )
    assert importers == ["compat.py"]


def test_missing_framework_names_what_to_install() -> None:
    # Simulate Django 5.2 without the backport: neither module can be imported.
    code = (
        "import sys; sys.modules['django.tasks'] = None; sys.modules['django_tasks'] = None\n"
        "import django; from django.conf import settings; settings.configure(); django.setup()\n"
        "try:\n    import redis_tasks.compat\nexcept Exception as e:\n"
        "    print(type(e).__name__); print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(ROOT),
    )
    assert out.stdout.startswith("ImproperlyConfigured"), out.stderr
    assert "pip install 'django-redis-tasks[backport]'" in out.stdout
