"""``redis_tasks_worker --processes N``: N worker processes from one command, to use every core.

The parent only supervises: it starts the children, passes SIGTERM/SIGINT on to them (a second
one as EXIT_NOW), restarts a child that dies or asks for a fresh process (exit code 3, after a
pause) while it is not stopping, replaces at once a child that ran its --max-tasks (exit code
4), and exits with the highest exit code of its children.

A child is forked from the supervisor, which has loaded Django and the project already (as
gunicorn's ``--preload`` does), so a child starts, and a recycled one is replaced, without a
new interpreter importing everything again. The supervisor itself never talks to Redis or the
database and runs no threads of its own (the metrics server's aside), so a fork copies nothing
a child could trip over; a child builds its connections when it first uses them (redis-py's
pools, and ours, belong to the process that made them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType

logger = logging.getLogger("redis_tasks")
RESTART_PAUSE = 1.0  # seconds between restarts of a child that keeps dying
SUPERVISED = "REDIS_TASKS_SUPERVISED"  # set in the children's environment
EXIT_NOW = signal.SIGUSR1  # the supervisor's second signal, to its children
EXIT_RECYCLE = 4  # a child's exit code: it ran its --max-tasks; start a fresh one at once
STOPS = {signal.SIGTERM, signal.SIGINT}


def _die_with_parent() -> None:
    """Outside the supervisor's group, a child would outlive a SIGKILLed supervisor: ask
    Linux to send it SIGTERM (its graceful stop) when the supervisor dies."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ForkedChild:
    """One worker process forked from the supervisor, seen as ``subprocess.Popen`` shows one:
    ``poll()`` is None while it runs, then its exit code (minus the signal that killed it)."""

    def __init__(self, run: Callable[[], object]) -> None:
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            stream.flush()
        self.pid = os.fork()  # (under Supervisor._stops_held: see there)
        if self.pid == 0:
            self._become_child(parent, run, STOPS)
        self.returncode: int | None = None

    @staticmethod
    def _become_child(parent: int, run: Callable[[], object], stops: set[signal.Signals]) -> None:
        """Runs in the child and never returns: its exit code ends the process."""
        code = 1
        try:
            # A process group of its own: Ctrl-C in a terminal reaches only the supervisor,
            # which passes it on once.
            os.setpgid(0, 0)
            _die_with_parent()
            if os.getppid() != parent:  # the supervisor died before the request was made
                os._exit(0)
            for signum in stops:  # not the supervisor's handlers
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            os.environ[SUPERVISED] = "1"
            run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # nothing is left to report it to
                    stream.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal it, unless it is known to have ended. It does not reap (only the main loop
        does, between its own steps): a signal handler that reaped could take a child from
        under the loop's own ``poll()``."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


class Supervisor:
    def __init__(self, run_child: Callable[[], object], processes: int, burst: bool) -> None:
        """``run_child`` is the work of one worker process: it runs in each forked child."""
        self.run_child = run_child
        self.processes = processes
        self.burst = burst
        self.children: list[ForkedChild] = []
        self.signals = 0
        self.stop_signal = 0  # the first stop signal

    @contextlib.contextmanager
    def _stops_held(self) -> Iterator[None]:
        """Stop signals wait while children are forked and listed: the supervisor's handler
        would otherwise run in a child (and signal its siblings), or miss a child forked but
        not listed yet. A child unblocks them once it has its own handlers."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)

    def _start(self) -> ForkedChild:
        child = ForkedChild(self.run_child)
        logger.info("Started worker process %d", child.pid)
        return child

    def _restart(self, index: int) -> None:
        with self._stops_held():
            self.children[index] = self._start()
        if self.signals:  # a stop came meanwhile (a repeat within seconds is the same stop)
            self.children[index].send_signal(self.stop_signal if self.signals == 1 else EXIT_NOW)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        """The first signal asks the children to stop gracefully; a second one, to exit now.
        They may get the first one from elsewhere too (systemd signals every process of the
        unit), so they take a repeat within seconds for the same stop, and EXIT_NOW as the
        other."""
        self.signals += 1
        self.stop_signal = self.stop_signal or signum
        for child in self.children:
            child.send_signal(signum if self.signals == 1 else EXIT_NOW)

    def _clean_stops(self) -> tuple[int, ...]:
        """Exit codes that mean a child stopped as asked: 0; a child that ran its --max-tasks
        while the pool stops; a child still starting (no handler yet) when the stop signal
        it was sent came, and killed by that signal."""
        if not self.signals:
            return (0,)
        return (0, EXIT_RECYCLE, -signal.SIGTERM, -signal.SIGINT)

    def run(self) -> int:
        from django.db import connections

        connections.close_all()  # a child opens its own (a shared socket would mix replies)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        with self._stops_held():
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
                    self._restart(index)
                elif code != 0 and not self.burst and not self.signals:  # crashed, EXIT_RESTART
                    logger.warning("Worker process %d exited with %d; starting another",
                                   child.pid, code)  # fmt: skip
                    time.sleep(RESTART_PAUSE)
                    self._restart(index)
                else:
                    codes[index] = 0 if code in self._clean_stops() else code
            if len(codes) < len(self.children):
                self._reap()
        return max(codes.values(), default=0)

    def _reap(self) -> None:
        """Block until a child exits, and record its exit code (a signal's handler runs
        meanwhile, and the wait goes on after it)."""
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # none left to wait for (reaped by poll() already)
            return
        for child in self.children:
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
