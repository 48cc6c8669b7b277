"""A private ``redis-server`` for tests: a free port, no persistence, restartable, no leftovers.

Tests must never touch a Redis they did not start (a developer's or the CI's
shared instance may run on 6379). ``redis_server()`` starts one on a free
port of 127.0.0.1 with persistence switched off (``--save ""``,
``--appendonly no``), so that ``stop()`` then ``start()`` is a Redis that
lost its data, the fault Guarantee 4 of DESIGN.md is about::

    with redis_server() as server:
        client = redis.Redis.from_url(server.url)
        server.stop()      # a crash: the port refuses connections
        server.start()     # the same port, an empty dataset

The process runs in its own session and is stopped by killing its process
group, so nothing outlives the test. Without a ``redis-server`` binary the
calling test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.processes import free_port

__all__ = ["RedisServer", "redis_server"]

BINARY = "redis-server"


class RedisServer:
    """One ``redis-server`` child on a fixed port; ``stop``/``start`` keep the port."""

    def __init__(self, binary: str, port: int, directory: Path) -> None:
        self.binary = binary
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.directory / "redis.log", "ab")  # the child keeps its own copy
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--loglevel",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_for_ping(timeout)

    def _wait_for_ping(self, timeout: float) -> None:
        assert self.process is not None
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(redis.RedisError):
                    # Ours, not another server that took the port meanwhile.
                    if client.info("server")["process_id"] == self.process.pid:
                        return
                    raise RuntimeError(f"Port {self.port} is served by another process")
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING in {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Kill the server's process group (its data is lost: nothing is persisted)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "redis.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def redis_server(attempts: int = 5) -> Iterator[RedisServer]:
    """A running private ``redis-server``; skips the test if none is installed."""
    binary = shutil.which(BINARY) or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="gqlws-redis-") as directory:
        server: RedisServer | None = None
        for attempt in range(attempts):
            server = RedisServer(binary, free_port(), Path(directory))
            try:
                server.start()
                break
            except RuntimeError:
                # The port was taken between choosing it and binding it: try another.
                server.stop()
                if attempt == attempts - 1:
                    raise
        assert server is not None
        try:
            yield server
        finally:
            server.stop()
