from tests.settings import *  # noqa: F403
from tests.settings import TASKS

TASKS = {alias: {**entry} for alias, entry in TASKS.items()}
for entry in TASKS.values():
    if entry["BACKEND"].startswith("redis_tasks"):
        entry["autostart"] = False
