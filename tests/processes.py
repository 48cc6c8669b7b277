"""Starting and stopping server processes for tests: free ports, bounded waits, no leftovers.

Every process is started in its own session (process group) and stopped by
killing that group, so nothing it forked outlives the test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "ROOT",
    "SERVERS",
    "ServerProcess",
    "asgi_server",
    "daphne",
    "free_port",
    "server_argv",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``port`` accepts connections; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"Nothing listens on 127.0.0.1:{port} after {timeout} s")


class ServerProcess:
    """One child process serving on a port of 127.0.0.1."""

    def __init__(self, argv: Sequence[str], *, port: int, env: dict[str, str], log: Path) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = log
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout)
        # Children of the group may outlive the leader: make sure they are gone.
        self.signal(signal.SIGKILL)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    env.update(extra)
    return env


#: The ASGI servers an edge can run under, and their command lines.
SERVERS = ("daphne", "uvicorn")


def server_argv(server: str, application: str, port: int) -> list[str]:
    """The command line serving ``application`` on 127.0.0.1:``port`` under ``server``."""
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application]
    if server == "uvicorn":
        # No lifespan: Channels' router does not speak it (uvicorn would log
        # that at every start).
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "off", "--log-level", "warning", application,
        ]  # fmt: skip
    raise ValueError(f"Unknown ASGI server {server!r}; expected one of {SERVERS}")


@contextlib.contextmanager
def asgi_server(
    application: str,
    log_dir: Path,
    *,
    server: str = "daphne",
    env: dict[str, str] | None = None,
    attempts: int = 3,
) -> Iterator[ServerProcess]:
    """A ``server`` (Daphne or uvicorn) process serving ``application`` on a free port."""
    for attempt in range(attempts):
        port = free_port()
        process = ServerProcess(
            server_argv(server, application, port),
            port=port,
            env=env or child_env(),
            log=log_dir / f"{server}-{port}.log",
        )
        try:
            wait_for_port(port, process.process, timeout=30)
        except RuntimeError:
            process.stop()
            if attempt == attempts - 1:
                raise RuntimeError(f"{server} did not start:\n{process.log_tail()}") from None
            continue  # the port was taken in between: try another
        try:
            yield process
        finally:
            process.stop()
        return


def daphne(
    application: str, log_dir: Path, *, env: dict[str, str] | None = None, attempts: int = 3
) -> contextlib.AbstractContextManager[ServerProcess]:
    """A Daphne process serving ``application`` on a free port of 127.0.0.1."""
    return asgi_server(application, log_dir, server="daphne", env=env, attempts=attempts)
