"""Where this package reaches below Python's public API, and nowhere else.

``threading._register_atexit``: a callback run at interpreter exit before the thread pools of
``concurrent.futures`` are shut down (``atexit`` runs after them). The autostarted worker stops
there, so that its running tasks get their grace period while ``asyncio.to_thread`` still
works. tests/test_shims.py checks that it is still there and runs in that order.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable


def at_exit_before_thread_pools(callback: Callable[[], None]) -> None:
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # another Python: the public hook, which runs later
        atexit.register(callback)
    else:
        register(callback)
