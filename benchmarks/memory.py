"""Where an idle subscribed connection's memory goes: the server, gqlws, the session stack.

Three fresh servers under the same ASGI server, one after the other, each
given ``--subscribers`` sockets subscribed to the cohort feed (the load
generator's fan-out with its warm-up broadcasts and nothing after): the
server's RSS once every subscription is live, minus before the sockets
opened, per socket, as ``benchmarks.run`` measures it.

``bare``
    ``benchmarks/bare_app.py``: what the ASGI server itself holds per socket.
``gqlws``
    the example's consumer routed by URL alone (``benchmarks/plain_asgi.py``).
``example``
    the example as deployed (``example.asgi``: Channels' origin check,
    cookies, session and auth middleware), where each connection also gets
    a Django session (its identity in the chat).

    python -m benchmarks.memory [--subscribers 1000] [--server daphne] [--repeat 3]

Prints one table (medians with ``--repeat``) and writes
``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import run
from benchmarks.links import raise_fd_limit

RESULTS = Path(__file__).resolve().parent / "results"

SERVERS: dict[str, Callable[[Path, str], contextlib.AbstractContextManager[run.Target]]] = {
    "bare": run.bare_server,
    "gqlws": lambda log_dir, asgi: run.embedded_server(
        log_dir, asgi, "benchmarks.plain_asgi:application"
    ),
    "example": run.embedded_server,
}


def measure(name: str, asgi: str, subscribers: int) -> float:
    """KiB per idle subscribed connection of one fresh ``name`` server."""
    with tempfile.TemporaryDirectory() as tmp, SERVERS[name](Path(tmp), asgi) as target:
        result = run.loadgen(
            {
                "kind": "fanout",
                "subscription": "feed",
                "urls": target.urls,
                "subscribers": subscribers,
                "back_to_back": 0,
                "fixed_rate": 0,
                "edge_pids": target.edge_pids,
                "deadline": 300,
            }
        )
    if result.get("errors"):
        raise RuntimeError(f"{name}: the load generator saw errors: {result}")
    return float(result["memory"]["bytes_per_connection"]) / 1024


def rows(figures: dict[str, list[float]]) -> Iterator[str]:
    bare = statistics.median(figures["bare"])
    yield f"{'server':<8} {'KiB/conn':>9} {'over bare':>10}  runs"
    for name, runs in figures.items():
        median = statistics.median(runs)
        each = ", ".join(f"{run_:.1f}" for run_ in runs)
        yield f"{name:<8} {median:>9.2f} {median - bare:>+10.2f}  {each}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--server", choices=run.ASGI_SERVERS, default="daphne")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    raise_fd_limit()
    figures: dict[str, list[float]] = {name: [] for name in SERVERS}
    for _ in range(args.repeat):
        for name in SERVERS:  # interleaved: a drifting machine moves each server alike
            figures[name].append(measure(name, args.server, args.subscribers))
    lines = list(rows(figures))
    print("\n".join(lines))
    report: dict[str, Any] = {
        "command": "python -m benchmarks.memory "
        f"--subscribers {args.subscribers} --server {args.server} --repeat {args.repeat}",
        "git": run._git_revision(),
        "kib_per_connection": figures,
        "table": "\n".join(lines),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
