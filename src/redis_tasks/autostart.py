"""Starting a background worker with the Django server, once per server process.

A process is a server when it runs ``manage.py runserver`` (the reloader's child, or with
``--noreload``) or when Django was set up by ``get_wsgi_application()`` /
``get_asgi_application()``, which is how gunicorn, uvicorn, daphne, uWSGI and other servers load a
project. Other management commands (migrate, shell, test, the worker itself) and plain scripts
never start one. Turn it off per backend with ``"autostart": False`` (production with dedicated
``redis_tasks_worker`` processes) or for a process with ``REDIS_TASKS_AUTOSTART=0``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from types import FrameType

from django.conf import settings

from .shims.python import at_exit_before_thread_pools

logger = logging.getLogger("redis_tasks")

SERVER_ENTRY_POINTS = {
    ("django.core.wsgi", "get_wsgi_application"),
    ("django.core.asgi", "get_asgi_application"),
}
MANAGEMENT_PROGRAMS = {"manage.py", "django-admin", "django-admin.py"}
STOP_GRACE = 3.0  # seconds running tasks get at process exit before they are handed back
STOP_TIMEOUT = STOP_GRACE + 5.0

_lock = threading.Lock()
_running: object | None = None  # the BackgroundWorker of this process


def _called_from_server_entry_point(frame: FrameType | None) -> bool:
    while frame is not None:
        name = (frame.f_globals.get("__name__"), frame.f_code.co_name)
        if name in SERVER_ENTRY_POINTS:
            return True
        frame = frame.f_back
    return False


def is_server_process(argv: list[str] | None = None, frame: FrameType | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    program = argv[0] if argv else ""
    is_management = os.path.basename(program) in MANAGEMENT_PROGRAMS or program.endswith(
        os.path.join("django", "__main__.py")  # python -m django
    )
    if is_management and len(argv) > 1:
        if argv[1] != "runserver":
            return False
        # The autoreloader's parent only watches files; its child (RUN_MAIN) serves.
        return os.environ.get("RUN_MAIN") == "true" or "--noreload" in argv
    return _called_from_server_entry_point(frame or _caller())


def _caller() -> FrameType | None:
    """The frame of whoever called the function that calls this."""
    frame = inspect.currentframe()
    return None if frame is None or frame.f_back is None else frame.f_back.f_back


def started() -> bool:
    return _running is not None


def maybe_start() -> bool:
    """Start the background worker if this process is a server; return whether one runs."""
    if os.environ.get("REDIS_TASKS_AUTOSTART", "").lower() in ("0", "false", "no", "off"):
        return False
    if not is_server_process(frame=_caller()):
        return False
    if not start():
        return False
    if "runserver" in sys.argv[1:2]:  # its own lines go to the terminal: so does this one
        sys.stderr.write(f"Redis tasks: {_running}\n")
    return True


def start() -> bool:
    global _running
    from .backend import redis_backends
    from .background import BackgroundWorker
    from .worker import Worker

    with _lock:
        if _running is not None:
            return True
        backends = [b for b in redis_backends() if b.config.autostart and not list(b.check())]
        if not backends:
            return False
        worker = Worker(
            backends,
            concurrency=max(b.config.concurrency for b in backends),
            grace=STOP_GRACE,
            # A development server against a development Redis: no warning on every reload
            # that it keeps nothing on disk (the dedicated worker always warns).
            risk_level=logging.INFO if settings.DEBUG else logging.WARNING,
        )
        _running = BackgroundWorker(worker).start()
    logger.info("Autostarted background worker %s in pid %d", worker.worker_id, os.getpid())
    # Stop before concurrent.futures' own exit hook forbids new work and joins the pools:
    # running tasks get STOP_GRACE, then go back to their queue.
    at_exit_before_thread_pools(stop)
    return True


def stop() -> None:
    global _running
    with _lock:
        running, _running = _running, None
    if running is not None:
        running.stop(STOP_TIMEOUT)  # type: ignore[attr-defined]


def _forget_in_child() -> None:
    """A forked child has no worker thread (threads do not survive fork) and starts none by
    itself: a server that forks after loading the app (gunicorn --preload) calls start() in
    its post-fork hook."""
    global _running
    _running = None


os.register_at_fork(after_in_child=_forget_in_child)
