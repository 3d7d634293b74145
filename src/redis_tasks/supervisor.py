"""``redis_tasks_worker --processes N``: N worker processes from one command, to use every core.

The parent only supervises: it starts the children (the same command without --processes),
passes SIGTERM/SIGINT on to them (a second one as EXIT_NOW), restarts a child that dies or
asks for a fresh process (exit code 3, after a pause) while it is not stopping, replaces at once
a child that ran its --max-tasks (exit code 4), and exits with the highest exit code of its
children.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

logger = logging.getLogger("redis_tasks")
RESTART_PAUSE = 1.0  # seconds between restarts of a child that keeps dying
SUPERVISED = "REDIS_TASKS_SUPERVISED"  # set in the children's environment
EXIT_NOW = signal.SIGUSR1  # the supervisor's second signal, to its children
EXIT_RECYCLE = 4  # a child's exit code: it ran its --max-tasks; start a fresh one at once


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Outside the supervisor's group, a child would outlive a SIGKILLed supervisor: ask
    Linux to send it SIGTERM (its graceful stop) when the supervisor dies. Runs in the child
    between fork and exec; a supervisor that died before that is seen by the parent pid."""

    prctl = None
    if sys.platform == "linux":  # looked up here: the child must not import (or lock) anything
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arrange() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(0)

    return arrange


class Supervisor:
    def __init__(self, child_args: Sequence[str], processes: int, burst: bool) -> None:
        self.command = [sys.executable, "-m", "django", "redis_tasks_worker", *child_args]
        self.processes = processes
        self.burst = burst
        self.children: list[subprocess.Popen[bytes]] = []
        self.signals = 0

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        from django.conf import settings

        env.setdefault("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE)
        env[SUPERVISED] = "1"
        # A process group of its own: Ctrl-C in a terminal reaches only the supervisor, which
        # passes it on once.
        child = subprocess.Popen(
            self.command, env=env, process_group=0, preexec_fn=_die_with_parent(os.getpid())
        )
        logger.info("Started worker process %d", child.pid)
        return child

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        """The first signal asks the children to stop gracefully; a second one, to exit now.
        They may get the first one from elsewhere too (systemd signals every process of the
        unit), so they take a repeat within seconds for the same stop, and EXIT_NOW as the
        other."""
        self.signals += 1
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum if self.signals == 1 else EXIT_NOW)

    def _clean_stops(self) -> tuple[int, ...]:
        """Exit codes that mean a child stopped as asked: 0; a child that ran its --max-tasks
        while the pool stops; a child still starting (no handler yet) when the stop signal
        it was sent came, and killed by that signal."""
        if not self.signals:
            return (0,)
        return (0, EXIT_RECYCLE, -signal.SIGTERM, -signal.SIGINT)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        self.children = [self._start() for _ in range(self.processes)]
        codes: dict[int, int] = {}
        while len(codes) < len(self.children):
            for index, child in enumerate(self.children):
                code = child.poll()
                if code is None or index in codes:
                    continue
                if code == EXIT_RECYCLE and not self.signals:
                    logger.info("Worker process %d ran its --max-tasks; starting a fresh one",
                                child.pid)  # fmt: skip
                    self.children[index] = self._start()
                elif code != 0 and not self.burst and not self.signals:  # crashed, EXIT_RESTART
                    logger.warning("Worker process %d exited with %d; starting another",
                                   child.pid, code)  # fmt: skip
                    time.sleep(RESTART_PAUSE)
                    self.children[index] = self._start()
                else:
                    codes[index] = 0 if code in self._clean_stops() else code
            time.sleep(0.05)
        return max(codes.values(), default=0)
