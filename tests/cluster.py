"""The distributed topology as local processes: Redis, edges (Daphne or uvicorn), Celery workers.

Usable from tests::

    with Cluster(edges=2, workers=2) as cluster:
        cluster.edge_urls        # ["ws://127.0.0.1:PORT/", ...]
        cluster.kill_worker(0)   # SIGKILL, for fault tests

and by hand (prints one line of JSON, stays up until SIGINT or SIGTERM)::

    python -m tests.cluster --edges 2 --workers 2 [--server uvicorn]

Everything binds 127.0.0.1 on free ports, every wait is bounded, and every
process started here is stopped on exit (process groups are killed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.processes import (
    ROOT,
    SERVERS,
    ServerProcess,
    child_env,
    free_port,
    server_argv,
    wait_for_port,
)
from tests.redis_server import RedisServer, redis_server

__all__ = ["Cluster"]

PROJECTS = {
    # name: (ASGI application, Django settings module)
    "tests": ("tests.asgi:application", "tests.settings"),
    "example": ("example.asgi:application", "example.settings"),
}


class Cluster:
    """A private redis-server, ``edges`` ASGI server processes and ``workers`` Celery workers."""

    def __init__(
        self,
        *,
        edges: int = 2,
        workers: int = 2,
        project: str = "tests",
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        worker_concurrency: int = 8,
        server: str = "daphne",
    ) -> None:
        self.asgi, self.settings_module = PROJECTS[project]
        #: The ASGI server of the edges: "daphne" or "uvicorn".
        self.server = server
        self.edge_count = edges
        self.worker_count = workers
        self.worker_concurrency = worker_concurrency
        self._own_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="gqlws-cluster-"))
        self.extra_env = env or {}
        self.redis: RedisServer | None = None
        self._stack = contextlib.ExitStack()
        self.edges: list[ServerProcess] = []
        self.workers: list[ServerProcess | None] = []

    # ---- Life cycle --------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.redis = self._stack.enter_context(redis_server())
        self.env = child_env(
            DJANGO_SETTINGS_MODULE=self.settings_module,
            GQLWS_REDIS_URL=self.redis.url,
            GQLWS_TEST_DB=os.environ.get("GQLWS_TEST_DB", str(self.log_dir / "db.sqlite3")),
            **self.extra_env,
        )
        self._migrate()
        self.workers = [self._start_worker(index) for index in range(self.worker_count)]
        self.edges = [self._start_edge(index) for index in range(self.edge_count)]
        for worker in self.workers:
            assert worker is not None
            self._wait_worker_ready(worker)

    def stop(self) -> None:
        for process in [*self.edges, *self.workers]:
            if process is not None:
                process.stop()
        self._stack.close()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.log_dir, ignore_errors=True)

    # ---- Processes ---------------------------------------------------------

    def _migrate(self) -> None:
        """Create the project's tables (the edges and workers share one database)."""
        import subprocess

        done = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")

    def _start_edge(self, index: int) -> ServerProcess:
        port = free_port()
        argv = server_argv(self.server, self.asgi, port)
        edge = ServerProcess(
            argv, port=port, env=self.env, log=self.log_dir / f"edge{index}-{port}.log"
        )
        try:
            wait_for_port(port, edge.process, timeout=30)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"Edge {index} did not start: {error}\n{edge.log_tail()}") from None
        return edge

    def _start_worker(self, index: int) -> ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--pool=threads",
            f"--concurrency={self.worker_concurrency}",
            "--loglevel=INFO",
            "-Q",
            "gqlws",
            "-n",
            f"worker{index}-{time.monotonic_ns()}@127.0.0.1",
            "--without-gossip",
            "--without-mingle",
        ]
        log = self.log_dir / f"worker{index}-{time.monotonic_ns()}.log"
        return ServerProcess(argv, port=0, env=self.env, log=log)

    @staticmethod
    def _wait_worker_ready(worker: ServerProcess, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"Worker exited:\n{worker.log_tail()}")
            if " ready." in worker.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"Worker not ready after {timeout} s:\n{worker.log_tail()}")

    def kill_edge(self, index: int, signum: int = signal.SIGKILL) -> None:
        edge = self.edges[index]
        edge.signal(signum)
        edge.process.wait(30)
        edge.stop()

    def restart_edge(self, index: int) -> None:
        """Start a new edge in slot ``index`` (on a new port)."""
        if self.edges[index].alive():
            self.kill_edge(index)
        self.edges[index] = self._start_edge(index)

    def kill_worker(self, index: int) -> None:
        worker = self.workers[index]
        if worker is not None:
            worker.signal(signal.SIGKILL)
            worker.process.wait(10)
            worker.stop()
            self.workers[index] = None

    def restart_worker(self, index: int) -> None:
        self.kill_worker(index)
        worker = self._start_worker(index)
        self.workers[index] = worker
        self._wait_worker_ready(worker)

    # ---- Addresses ---------------------------------------------------------

    @property
    def edge_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{edge.port}/" for edge in self.edges]

    @property
    def http_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{edge.port}/" for edge in self.edges]

    def describe(self) -> dict[str, Any]:
        assert self.redis is not None
        return {
            "edges": self.edge_urls,
            "http": self.http_urls,
            "redis": self.redis.url,
            "workers": [w.pid for w in self.workers if w is not None],
            "pids": [
                *(edge.pid for edge in self.edges),
                *(w.pid for w in self.workers if w is not None),
                *([self.redis.process.pid] if self.redis.process is not None else []),
            ],
            "logs": str(self.log_dir),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=SERVERS, default="daphne", help="the edges' server")
    parser.add_argument("--project", choices=sorted(PROJECTS), default="example")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    os.chdir(ROOT)
    with Cluster(
        edges=args.edges, workers=args.workers, project=args.project, server=args.server
    ) as cluster:
        print(json.dumps(cluster.describe()), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
