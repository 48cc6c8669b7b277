"""Benchmarks of gqlws against a bare ASGI app, embedded and distributed, in one run.

Run from the repository root::

    python -m benchmarks.run                      # full sizes, both modes (minutes)
    python -m benchmarks.run --quick              # tiny sizes: correctness in < 60 s
    python -m benchmarks.run --mode embedded --subscribers 1000 --out /tmp/run.json
    python -m benchmarks.run --server uvicorn --repeat 3   # edges under uvicorn, median of 3

It prints one table and writes JSON (``benchmarks/results/run.json`` unless
``--out``). Every server runs under the same ASGI server (``--server``:
Daphne or uvicorn), on 127.0.0.1 and free ports, started and stopped here
(``tests/processes.py``, ``tests/cluster.py``). With ``--repeat N`` each
server is measured N times and every figure is the median of the N runs
(lost, duplicated, out-of-order and error counts: the worst run; memory:
the first run, the only one on a fresh server):

``bare``
    ``benchmarks/bare_app.py``: no Django, no GraphQL, precomputed answers;
    the ceiling of the server, the machine and the load generator.
``embedded``
    the example chat (``example.asgi:application``), one Daphne process, a
    temporary sqlite database (``GQLWS_EXAMPLE_DB``), no Redis, no Celery,
    ``DJANGO_DEBUG=0`` (as in production) and no rate limit
    (``GQLWS_EXAMPLE_RATE_LIMIT=0``; both gqlws servers).
``distributed``
    the example chat on 2 Daphne edges, 2 Celery workers and a private Redis
    (``tests.cluster.Cluster(project="example")``).

For each server, the load generator (``benchmarks/loadgen.py``, a separate
process, started once per measurement with a JSON spec) measures:

1. **Query round trips** at 1, 16 and 64 connections, each a closed loop of
   ``{ history(chatroom: "bench-empty") { text } }`` (a sync resolver in the
   thread pool reading an empty room through Django's ORM: what a user's
   query costs) and of ``{ me }`` (an async resolver, no database: what gqlws
   itself costs; such a query runs on the event loop, without the pool):
   results per second, p50 and p99.
2. **Fan-out** to N subscribers of one room, spread over the edges, of
   ``onNewChatMessage`` (``chat``: ``publish`` per subscriber, as it hides
   one's own messages) and of ``onChatFeed`` (``feed``: a cohort, one
   ``publish`` and one encoding per broadcast),
   half on ``graphql-transport-ws`` and half on ``graphql-ws``: K
   ``sendChatMessage`` broadcasts back to back, then some at a fixed rate (the
   same offered notifications per second for every server). Notifications
   delivered per second, end-to-end p50 and p99 from the send time written
   in the chat text to the receipt, and lost, duplicated and out-of-order
   notifications, counted per connection from the sequence numbers in the
   texts: these must be 0 (the run exits with 1 otherwise).
3. **Memory** of an idle subscribed connection: the edges' RSS after the N
   subscriptions are active minus before the sockets opened, divided by N.
   Sizes run in increasing order on the same server, so a later size's
   figure is a lower bound (memory freed by the earlier one is reused).

Ratios are gqlws / bare, per row: below 1 for a throughput means slower than
the ceiling, above 1 for a latency or memory means more. The machine's load
average is recorded before and after each server: numbers from a busy
machine are not comparable with numbers from an idle one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.links import raise_fd_limit
from tests.cluster import Cluster
from tests.processes import ROOT, asgi_server, child_env
from tests.processes import SERVERS as ASGI_SERVERS

__all__ = ["Sizes", "main"]

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("embedded", "distributed")
#: The example as it runs in production, without Django's debug mode (which
#: keeps every SQL query of every operation, with its timing), and without
#: the per-connection rate limit: one socket's closed loop of queries goes
#: faster than its default 500 messages/s, and the bare app has no limit.
PRODUCTION = {"DJANGO_DEBUG": "0", "GQLWS_EXAMPLE_RATE_LIMIT": "0"}


@dataclass(frozen=True)
class Sizes:
    """How much load each measurement offers."""

    connections: tuple[int, ...]
    queries: int  # per connection count, shared by the connections
    query_kinds: tuple[str, ...]  # benchmarks.frames.QUERIES: "history" (database), "me"
    subscribers: tuple[int, ...]
    subscriptions: tuple[str, ...]  # benchmarks.frames.SUBSCRIPTIONS: "chat", "feed" (cohort)
    broadcasts: int  # back to back; also the most sent at the fixed rate
    notification_rate: float  # offered notifications per second in the fixed-rate phase
    fixed_seconds: float  # how long the fixed-rate phase lasts (at least 3 broadcasts)
    warmup: int  # unmeasured queries per connection first (caches, pools, prefetch)
    deadline: float  # seconds one load generator run may take

    def fixed_rate(self, subscribers: int) -> tuple[float, int]:
        """Broadcasts per second offering ``notification_rate``, and how many to send."""
        rate = self.notification_rate / subscribers
        return rate, max(3, min(self.broadcasts, round(rate * self.fixed_seconds)))


FULL = Sizes(
    connections=(1, 16, 64),
    queries=2000,
    query_kinds=("history", "me"),
    subscribers=(1000, 4000),
    subscriptions=("chat", "feed"),
    broadcasts=20,
    notification_rate=1000.0,
    fixed_seconds=10.0,
    warmup=5,
    deadline=600.0,
)
QUICK = Sizes(
    connections=(1, 16, 64),
    queries=50,
    query_kinds=("history", "me"),
    subscribers=(20,),
    subscriptions=("chat", "feed"),
    broadcasts=20,
    notification_rate=400.0,
    fixed_seconds=1.0,
    warmup=1,
    deadline=60.0,
)


@dataclass
class Target:
    """A running server: where its WebSocket endpoint is, which processes are its edges."""

    name: str
    urls: list[str]
    edge_pids: list[int]
    logs: list[Path]  # of every process serving it, read for ERROR lines at the end


class LoadgenFailed(RuntimeError):
    """The load generator exited with an error; its stderr is the message."""


# ---- Servers -----------------------------------------------------------------


@contextlib.contextmanager
def bare_server(log_dir: Path, asgi: str) -> Iterator[Target]:
    with asgi_server(
        "benchmarks.bare_app:application", log_dir, server=asgi, env=child_env()
    ) as server:
        url = f"ws://127.0.0.1:{server.port}/graphql/"
        yield Target("bare", [url], [server.pid], [server.log_path])


@contextlib.contextmanager
def embedded_server(
    log_dir: Path, asgi: str, application: str = "example.asgi:application"
) -> Iterator[Target]:
    env = child_env(
        DJANGO_SETTINGS_MODULE="example.settings",
        GQLWS_EXAMPLE_DB=str(log_dir / "embedded.sqlite3"),
        **PRODUCTION,
    )
    done = subprocess.run(
        [sys.executable, "example/manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
    with asgi_server(application, log_dir, server=asgi, env=env) as server:
        url = f"ws://127.0.0.1:{server.port}/graphql/"
        yield Target("embedded", [url], [server.pid], [server.log_path])


@contextlib.contextmanager
def distributed_server(log_dir: Path, asgi: str) -> Iterator[Target]:
    with Cluster(
        edges=2,
        workers=2,
        project="example",
        server=asgi,
        log_dir=log_dir,
        env={"GQLWS_EXAMPLE_DB": str(log_dir / "distributed.sqlite3"), **PRODUCTION},
    ) as cluster:
        yield Target(
            "distributed",
            [url + "graphql/" for url in cluster.edge_urls],
            [edge.pid for edge in cluster.edges],
            [p.log_path for p in [*cluster.edges, *cluster.workers] if p is not None],
        )


SERVERS: dict[str, Callable[[Path, str], contextlib.AbstractContextManager[Target]]] = {
    "bare": bare_server,
    "embedded": embedded_server,
    "distributed": distributed_server,
}


# ---- Measurements --------------------------------------------------------------


def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``python -m benchmarks.loadgen`` with ``spec``; its JSON result."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.loadgen"],
            input=json.dumps(spec),
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=spec["deadline"] + 60,
        )
    except subprocess.TimeoutExpired:
        raise LoadgenFailed(f"loadgen did not finish in {spec['deadline'] + 60} s") from None
    if done.returncode != 0:
        raise LoadgenFailed(done.stderr.strip()[-2000:] or f"exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(target: Target, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Queries at each connection count, then fan-out (and memory) at each size."""
    results: dict[str, Any] = {
        "urls": target.urls,
        "edge_pids": target.edge_pids,
        "loadavg_before": os.getloadavg(),
        "queries": [],
        "fanout": [],
    }
    for query in sizes.query_kinds:
        for connections in sizes.connections:
            log(f"{target.name}: {query} queries on {connections} connection(s)")
            spec = {
                "kind": "queries",
                "query": query,
                "urls": target.urls,
                "connections": connections,
                "queries": sizes.queries,
                "warmup": sizes.warmup,
                "deadline": sizes.deadline,
            }
            results["queries"].append(_attempt(spec, {"query": query, "connections": connections}))
    for subscription in sizes.subscriptions:
        for subscribers in sizes.subscribers:
            rate, fixed = sizes.fixed_rate(subscribers)
            log(f"{target.name}: fan-out of {subscription} to {subscribers} subscribers")
            spec = {
                "kind": "fanout",
                "subscription": subscription,
                "urls": target.urls,
                "subscribers": subscribers,
                "back_to_back": sizes.broadcasts,
                "fixed_rate": fixed,
                "rate": rate,
                "edge_pids": target.edge_pids,
                "deadline": sizes.deadline,
            }
            case = {"subscription": subscription, "subscribers": subscribers}
            results["fanout"].append(_attempt(spec, case))
    results["loadavg_after"] = os.getloadavg()
    return results


#: Counts reported from the worst run, never a median: a loss in one run is a loss.
WORST = frozenset({"lost", "duplicated", "out_of_order", "errors"})


def combine(runs: list[Any], key: str | None = None) -> Any:
    """The median of repeated measurements, leaf by leaf (the worst of correctness counts)."""
    present = [run for run in runs if run is not None]
    if not present:
        return None
    first = present[0]
    if key == "memory":
        # Only the first run starts from a fresh server: later runs reuse
        # the memory the first one freed and would read as ~0.
        return first
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for run in present if isinstance(run, dict) for k in run))
        return {k: combine([run.get(k) for run in present], k) for k in keys}
    if isinstance(first, list) and all(
        isinstance(r, list) and len(r) == len(first) for r in present
    ):
        if first and isinstance(first[0], dict):
            return [combine(list(column)) for column in zip(*present, strict=True)]
        return first
    if isinstance(first, bool):
        return all(present)
    if isinstance(first, (int, float)) and all(isinstance(r, (int, float)) for r in present):
        return max(present) if key in WORST else statistics.median(present)
    return first


def _attempt(spec: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """The load generator's result, or the case with the error that prevented it."""
    try:
        return loadgen(spec)
    except LoadgenFailed as error:
        return {**case, "error": str(error)}


# ---- Checks and table -----------------------------------------------------------


def logged_errors(logs: list[Path]) -> dict[str, int]:
    """How often each distinct ERROR line appears in the servers' logs (timestamps cut)."""
    counts: dict[str, int] = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or ": ERROR/" in line:
                message = re.sub(r"^[\d\-:, \[\]]+", "", line).strip()[:200]
                counts[message] = counts.get(message, 0) + 1
    return counts


def problems(results: dict[str, Any]) -> list[str]:
    """Everything that must not happen: failed measurements, errors, lost or disordered."""
    found = []
    for server, sections in results.items():
        for row in sections.get("queries", []) + sections.get("fanout", []):
            case = " ".join(
                str(row[k])
                for k in ("query", "connections", "subscription", "subscribers")
                if k in row
            )
            if "error" in row:
                found.append(f"{server} {case}: {row['error'].splitlines()[-1]}")
                continue
            if row.get("errors"):
                found.append(
                    f"{server} {case}: {row['errors']} errors, e.g. {row['error_examples']}"
                )
            for phase in ("back_to_back", "fixed_rate"):
                counts = row.get(phase)
                if counts is None:
                    continue
                bad = {k: counts[k] for k in ("lost", "duplicated", "out_of_order") if counts[k]}
                if bad or not counts["complete"]:
                    found.append(f"{server} fan-out {case} {phase}: {bad or 'incomplete'}")
    return found


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def table(results: dict[str, Any], sizes: Sizes) -> str:
    """One row per (section, case, metric); a column per server, then gqlws / bare."""
    servers = list(results)
    gqlws_servers = [s for s in servers if s != "bare"]
    rows: list[tuple[str, str, str, dict[str, Any]]] = []

    def pick(section: str, key: Any, value: Any) -> dict[str, dict[str, Any]]:
        keys, values = (key, value) if isinstance(key, tuple) else ((key,), (value,))
        chosen = {}
        for server in servers:
            for row in results[server][section]:
                if tuple(row.get(k) for k in keys) == values:
                    chosen[server] = row
        return chosen

    def get(row: dict[str, Any] | None, *path: str) -> Any:
        for key in path:
            if not isinstance(row, dict) or row.get(key) is None:
                return None
            row = row[key]
        return row

    for query in sizes.query_kinds:
        for connections in sizes.connections:
            by_server = pick("queries", ("query", "connections"), (query, connections))
            case = f"{query} {connections} conn"
            for metric, key in (
                ("ops/s", "ops_per_s"),
                ("p50 ms", "p50_ms"),
                ("p99 ms", "p99_ms"),
            ):
                values = {s: get(r, key) for s, r in by_server.items()}
                rows.append(("queries", case, metric, values))
    for subscription, subscribers in (
        (sub, n) for sub in sizes.subscriptions for n in sizes.subscribers
    ):
        by_server = pick("fanout", ("subscription", "subscribers"), (subscription, subscribers))
        rate, fixed = sizes.fixed_rate(subscribers)
        for phase, section, case in (
            (
                "back_to_back",
                "fan-out back to back",
                f"{subscription} N={subscribers} x{sizes.broadcasts}",
            ),
            (
                "fixed_rate",
                "fan-out fixed rate",
                f"{subscription} N={subscribers} x{fixed} @{rate:g}/s",
            ),
        ):
            for metric, key in (
                ("notif/s", "notifications_per_s"),
                ("p50 ms", "p50_ms"),
                ("p99 ms", "p99_ms"),
            ):
                values = {s: get(r, phase, key) for s, r in by_server.items()}
                rows.append((section, case, metric, values))
        memory = {
            s: None if b is None else b / 1024
            for s, b in (
                (s, get(r, "memory", "bytes_per_connection")) for s, r in by_server.items()
            )
        }
        rows.append(("memory (idle sub)", f"{subscription} N={subscribers}", "KiB/conn", memory))
        checks = {}
        for server, row in by_server.items():
            if "error" in row:
                checks[server] = "FAILED"
                continue
            counts = [
                sum(get(row, phase, k) or 0 for phase in ("back_to_back", "fixed_rate"))
                for k in ("lost", "duplicated", "out_of_order")
            ]
            checks[server] = "/".join(str(c) for c in counts)
        rows.append(("correctness", f"{subscription} N={subscribers}", "lost/dup/ooo", checks))

    header = ["section", "case", "metric", *servers, *(f"{s}/bare" for s in gqlws_servers)]
    lines = []
    for section, case, metric, values in rows:
        cells = [section, case, metric, *(_number(values.get(s)) for s in servers)]
        for server in gqlws_servers:
            mine, bare = values.get(server), values.get("bare")
            numeric = isinstance(mine, (int, float)) and isinstance(bare, (int, float))
            cells.append(_number(mine / bare) if numeric and bare else "-")
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    out = []
    for index, cells in enumerate([header, *lines]):
        out.append(
            "  ".join(
                str(c).ljust(w) if i < 3 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---- Entry point ----------------------------------------------------------------


def _git_revision() -> str | None:
    """The commit measured, with ``+dirty`` when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{head}+dirty" if dirty else head or None


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check correctness")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument(
        "--server", choices=ASGI_SERVERS, default="daphne", help="the ASGI server of every edge"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per server; the table shows their median"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "run.json")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    parser.add_argument("--subscribers", type=_counts, help="fan-out sizes, e.g. 1000,4000")
    parser.add_argument("--broadcasts", type=int, help="broadcasts per fan-out phase")
    parser.add_argument("--queries", type=int, help="queries per connection count")
    parser.add_argument(
        "--notification-rate", type=float, help="offered notifications/s, fixed-rate phase"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        "subscribers": args.subscribers,
        "broadcasts": args.broadcasts,
        "queries": args.queries,
        "notification_rate": args.notification_rate,
    }
    sizes = Sizes(**{**asdict(sizes), **{k: v for k, v in overrides.items() if v is not None}})
    modes = list(MODES) if args.mode == "both" else [args.mode]
    raise_fd_limit()  # the servers inherit it: thousands of sockets each

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    started = time.time()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gqlws-bench-") as tmp:
        log_root = args.log_dir or Path(tmp)
        for name in ["bare", *modes]:
            log(f"{name}: starting")
            log_dir = log_root / name
            log_dir.mkdir(parents=True, exist_ok=True)
            with SERVERS[name](log_dir, args.server) as target:
                runs = [measure(target, sizes, log) for _ in range(max(1, args.repeat))]
            results[name] = combine(runs)
            if len(runs) > 1:
                results[name]["runs"] = runs
            # After the servers stopped: what they logged on shutdown counts too.
            results[name]["server_errors"] = logged_errors(target.logs)
    report = {
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "server": args.server,
        "repeat": args.repeat,
        "modes": modes,
        "sizes": asdict(sizes),
        "git": _git_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "results": results,
        "problems": problems(results),
    }
    text = table(results, sizes)
    report["table"] = text
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    loads = ", ".join(
        f"{name} {r['loadavg_before'][0]:.1f}->{r['loadavg_after'][0]:.1f}"
        for name, r in results.items()
    )
    print(f"\n{os.cpu_count()} CPUs; 1-min load average during each server: {loads}")
    print(f"{report['command']} at {report['git']}: {report['seconds']:.0f} s; JSON: {args.out}")
    for name, r in results.items():
        for message, count in r["server_errors"].items():
            print(f"{name} servers logged {count} x: {message}")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
