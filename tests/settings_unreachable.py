"""The test project pointed at a Redis that is not there (a free port nobody listens on)."""

from tests.redis_server import free_port
from tests.settings import *  # noqa: F403
from tests.settings import TASKS

TASKS = {"default": {**TASKS["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
