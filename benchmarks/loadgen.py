"""The load generator: many WebSocket connections from one asyncio process.

The runner (``benchmarks/run.py``) starts it once per measurement, as a
separate process so that it runs on another core than the server it loads::

    echo '{"kind": "queries", "urls": ["ws://127.0.0.1:8000/graphql/"],
           "connections": 16, "queries": 2000}' | python -m benchmarks.loadgen

It reads one JSON spec on stdin and prints one JSON result on stdout (on
failure: exit code 1, the reason on stderr). All connections share one
``aiohttp.ClientSession`` and speak raw JSON frames (``benchmarks/frames.py``,
sockets in ``benchmarks/links.py``); gqlws's own client would cost more per
connection than the server under test. Connection ``i`` goes to
``urls[i % len(urls)]`` (spread over the edges) and speaks
``graphql-transport-ws`` when ``i`` is even, legacy ``graphql-ws`` when odd
(``"protocol"`` in the spec pins one of them instead).

Two kinds of measurement:

``queries``
    ``connections`` sockets each run a closed loop (send the small history
    query, wait for its result, send the next) until ``queries`` results
    arrived in all. Reported: results per second over the measured window
    (after ``warmup`` queries per connection), p50 and p99 round trip from
    sending the frame to reading the result frame, and errors.

``fanout``
    ``subscribers`` sockets subscribe to ``onNewChatMessage`` on one fresh
    room (each then makes one query round trip, and at most
    ``CONNECT_CONCURRENCY`` sockets are being set up at once); a separate
    socket sends ``sendChatMessage`` mutations whose text is
    ``"<seq> <time.time()>"``. First, warm-up broadcasts until every
    subscriber has received one: from then on each subscription is known to
    be active. The edges' RSS (``/proc/<pid>/status`` of ``edge_pids``) is read
    before the subscribers connect and after the warm-up settles: the
    difference divided by ``subscribers`` is the memory of an idle
    subscribed connection. Then two phases: ``back_to_back`` broadcasts, each
    mutation sent as soon as the previous one's result came back (so their
    issue order is their sequence order), and ``fixed_rate`` broadcasts
    scheduled ``1 / rate`` seconds apart (still one at a time). Each phase
    waits until every notification arrived (or nothing arrived for
    ``stall_timeout`` seconds) and reports notifications delivered per
    second from the first send to the last receipt (at a fixed rate that is
    about the offered rate: k broadcasts over k - 1 intervals plus one
    latency), the end-to-end latency
    from the send time in the text to the receipt (p50, p99), and, from the
    sequence numbers each connection received: lost, duplicated and
    out-of-order notifications (all must be 0).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from benchmarks.fanout import run_fanout
from benchmarks.frames import GRAPHQL_WS, QUERIES, TRANSPORT_WS
from benchmarks.links import (
    Link,
    LoadgenError,
    close_links,
    frozen_heap,
    ms,
    open_links,
    percentile,
    protocol_counts,
    raise_fd_limit,
)

__all__ = ["main", "run"]


# ---- Queries ---------------------------------------------------------------


async def run_queries(spec: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = spec["urls"]
    connections: int = spec["connections"]
    total: int = max(spec["queries"], connections)
    warmup: int = spec.get("warmup", 5)
    timeout: float = spec.get("timeout", 30.0)
    query = QUERIES[spec.get("query", "history")]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        links = await open_links(session, urls, connections, spec.get("protocol"), timeout)
        try:
            # Warm-up: document caches, thread pools and Celery prefetch, not measured.
            await asyncio.gather(*(_query_loop(link, query, warmup, timeout, []) for link in links))
            samples: list[float] = []
            shares = [total // connections + (i < total % connections) for i in range(connections)]
            with frozen_heap():
                started = time.perf_counter()
                outcomes = await asyncio.gather(
                    *(
                        _query_loop(link, query, n, timeout, samples)
                        for link, n in zip(links, shares, strict=True)
                    ),
                    return_exceptions=True,
                )
                elapsed = time.perf_counter() - started
            errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
            errors += [e for o in outcomes if isinstance(o, list) for e in o]
        finally:
            await close_links(links)
    return {
        "query": spec.get("query", "history"),
        "connections": connections,
        "protocols": protocol_counts(links),
        "queries": len(samples),
        "seconds": elapsed,
        "ops_per_s": len(samples) / elapsed if elapsed > 0 else None,
        "p50_ms": ms(percentile(samples, 0.50)),
        "p99_ms": ms(percentile(samples, 0.99)),
        "errors": len(errors),
        "error_examples": errors[:3],
    }


async def _query_loop(
    link: Link, query: tuple[str, str], count: int, timeout: float, samples: list[float]
) -> list[str]:
    """``count`` round trips on ``link``; round-trip times appended to ``samples``."""
    errors: list[str] = []
    document, field = query
    for _ in range(count):
        operation_id = link.new_id("q")
        started = time.perf_counter()
        await link.start(operation_id, document, {})
        payload = await link.result_of(operation_id, timeout)
        samples.append(time.perf_counter() - started)
        if payload.get("errors") or field not in (payload.get("data") or {}):
            errors.append(json.dumps(payload)[:300])
    return errors


# ---- Entry point -----------------------------------------------------------


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    kinds = {"queries": run_queries, "fanout": run_fanout}
    if spec.get("kind") not in kinds:
        raise LoadgenError(f"Unknown kind {spec.get('kind')!r}; expected one of {sorted(kinds)}")
    if spec.get("protocol") not in (None, TRANSPORT_WS, GRAPHQL_WS):
        raise LoadgenError(f"Unknown protocol {spec['protocol']!r}")
    return await asyncio.wait_for(kinds[spec["kind"]](spec), spec.get("deadline", 600.0) + 30)


def main() -> int:
    """Read a spec on stdin, print the result on stdout (exit 1 with the error on stderr)."""
    raise_fd_limit()
    spec = json.loads(sys.stdin.read())
    try:
        result = asyncio.run(run(spec))
    except (LoadgenError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
        print(f"loadgen: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
