"""Django settings for ``scale.py``: backend instances on the benchmark's single Redis or on
its local cluster, from the environment that ``scale.py`` sets for its worker processes."""

from __future__ import annotations

import json
import os

os.environ.setdefault("REDIS_TASKS_BENCH_URL", os.environ["REDIS_TASKS_SCALE_URL"])

from benchmarks.bench_settings import (  # noqa: F401
    DATABASES,
    DEBUG,
    FRAMEWORK_APPS,
    INSTALLED_APPS,
    LOGGING,
    SECRET_KEY,
    TIME_ZONE,
    USE_TZ,
)

URL = os.environ["REDIS_TASKS_SCALE_URL"]
CLUSTER = os.environ.get("REDIS_TASKS_SCALE_CLUSTER") == "1"
NAMESPACES: list[str] = json.loads(os.environ["REDIS_TASKS_SCALE_NAMESPACES"])

# The first instance is also "default", which the benchmark's @task functions are checked against.
ALIASES = ["default", *NAMESPACES[1:]]
TASKS = {
    alias: {
        "BACKEND": "redis_tasks.backend.RedisBackend",
        "LOCATION": URL if CLUSTER else f"{URL}/0",
        "cluster": CLUSTER,
        "queue_name": namespace,
        "maxsize": None,
        "autostart": False,
    }
    for alias, namespace in zip(ALIASES, NAMESPACES, strict=True)
}
