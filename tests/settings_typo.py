"""The test project with a typo in an option name, as a newcomer makes it: `manage.py check`
must say so (tests/test_first_minutes.py)."""

from tests.settings import *  # noqa: F403
from tests.settings import TASKS

TASKS = {"default": {**TASKS["default"], "maxsise": 64}}
