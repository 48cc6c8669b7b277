"""What the Celery path adds to a query's round trip: embedded vs distributed.

Runs the test project twice, on this machine, in one run: one Daphne process
in embedded mode, then the distributed topology (private Redis, 2 Daphne
edges, 2 Celery workers). A client sends ``{ hello }`` one at a time over
one WebSocket (graphql-transport-ws, on a route without the per-connection
rate limit) and times each round trip.

Third, the floor of any Celery path here (``benchmarks/celery_floor.py``):
a worker with gqlws's Celery settings whose task only answers through a
Redis list, timed from ``send_task`` to the popped answer, on the same Redis.
What the distributed mode adds beyond that floor is gqlws's own.

    python -m benchmarks.query_latency [--requests 2000]

Prints one table and writes ``benchmarks/results/query_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gqlws
from tests import processes
from tests.cluster import Cluster

RESULTS = Path(__file__).resolve().parent / "results"


async def measure(url: str, requests: int, warmup: int = 200) -> list[float]:
    client = gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
    await client.connect_and_init()
    try:
        for _ in range(warmup):
            await client.execute("{ hello }")
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            await client.execute("{ hello }")
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        await client.finalize()


def measure_floor(redis_url: str, log_dir: Path, requests: int, warmup: int = 200) -> list[float]:
    """Round trips of ``floor.echo`` through a worker of ``benchmarks.celery_floor``."""
    import redis

    env = processes.child_env(FLOOR_REDIS_URL=redis_url)
    argv = [
        *(sys.executable, "-m", "celery", "-A", "benchmarks.celery_floor", "worker"),
        *("--pool=threads", "--concurrency=8", "--loglevel=INFO", "-Q", "floor"),
        *("-n", f"floor-{uuid.uuid4().hex[:8]}@127.0.0.1", "--without-gossip", "--without-mingle"),
    ]
    worker = processes.ServerProcess(argv, port=0, env=env, log=log_dir / "floor-worker.log")
    try:
        deadline = time.monotonic() + 60
        while " ready." not in worker.log_path.read_text(errors="replace"):
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The floor worker did not start:\n{worker.log_tail()}")
            time.sleep(0.1)
        os.environ["FLOOR_REDIS_URL"] = redis_url  # read when the app module is imported
        from benchmarks.celery_floor import app

        answers = redis.Redis.from_url(redis_url)
        key = f"floor-{uuid.uuid4().hex}"
        samples = []
        for index in range(warmup + requests):
            started = time.perf_counter()
            app.send_task("floor.echo", args=(key, b"x" * 200), queue="floor", serializer="msgpack")
            if answers.blpop([key], timeout=10) is None:
                raise RuntimeError("The floor worker did not answer within 10 s")
            if index >= warmup:
                samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        worker.stop()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "requests": len(samples),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean_ms": statistics.fmean(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with processes.daphne("tests.asgi:application", Path(tmp)) as server:
            url = f"ws://127.0.0.1:{server.port}/graphql-unlimited/"
            results["embedded"] = summary(asyncio.run(measure(url, args.requests)))
        with Cluster(edges=2, workers=2, project="tests", log_dir=Path(tmp)) as cluster:
            url = cluster.edge_urls[0] + "graphql-unlimited/"
            results["distributed"] = summary(asyncio.run(measure(url, args.requests)))
            assert cluster.redis is not None
            floor = measure_floor(cluster.redis.url, Path(tmp), args.requests)
            results["celery floor"] = summary(floor)
    added_p50 = results["distributed"]["p50_ms"] - results["embedded"]["p50_ms"]
    added_p99 = results["distributed"]["p99_ms"] - results["embedded"]["p99_ms"]
    own_p50 = results["distributed"]["p50_ms"] - results["celery floor"]["p50_ms"]
    print(f"{'mode':<12} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for mode, row in results.items():
        print(
            f"{mode:<12} {row['requests']:>8} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['mean_ms']:>8.2f}"
        )
    print(f"Celery path adds: p50 {added_p50:+.2f} ms, p99 {added_p99:+.2f} ms")
    print(
        f"Celery's own round trip (floor): p50 {results['celery floor']['p50_ms']:.2f} ms; "
        f"distributed query minus floor: p50 {own_p50:+.2f} ms"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "query_latency.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
