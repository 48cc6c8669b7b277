"""Stopping gracefully: an edge leaves the fabric once drained, a worker finishes its tasks.

The edge's whole drain (SIGTERM on a Daphne edge, 1012, resume elsewhere)
is in ``test_distributed``; here are its last step in-process, and the
workers' side on the cluster harness.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any

import pytest

import gqlws
from broadcast import InMemoryFabric
from gqlws import drain, runtime
from gqlws.edge import Edge
from tests.conftest import distributed_runtime


class _Connection:
    async def drain(self, grace: float) -> None:
        pass


def test_open_connections_counts_what_is_tracked_until_untracked() -> None:
    before = drain.open_connections()
    first, second = _Connection(), _Connection()
    drain.track(first)
    drain.track(second)
    assert drain.open_connections() == before + 2
    drain.untrack(first)
    drain.untrack(first)  # twice: no harm
    assert drain.open_connections() == before + 1
    drain.untrack(second)
    assert drain.open_connections() == before
    assert not drain.draining()


async def test_a_drained_edge_leaves_the_fabric_with_its_registrations() -> None:
    fabric = runtime.fabric()
    assert isinstance(fabric, InMemoryFabric)
    edge = Edge.current()
    await edge.subscribe("s1", ["drain-group"], None, lambda delivery: None)
    assert fabric.registered("drain-group") == 1
    assert edge.edge_id in fabric.edge_stats()
    await drain._leave(asyncio.get_running_loop())
    assert edge.closed
    assert fabric.registered("drain-group") == 0
    assert edge.edge_id not in fabric.edge_stats()
    assert Edge.current() is edge  # no new edge joins while this loop drains


def test_the_edges_stats_say_what_status_shows() -> None:
    async def stats() -> dict[str, Any]:
        return Edge.current().stats()

    found = asyncio.run(stats())
    assert set(found) == {"connections", "subscriptions", "pid", "host", "started", "draining"}
    assert found["subscriptions"] == 0 and found["draining"] is False


def test_workers_shut_down_softly_within_a_bounded_time() -> None:
    from workers.app import app

    # Under a typical 30 s grace period (Kubernetes), and handing back what
    # was reserved even when idle (see workers/app.py for when it applies).
    assert 0 < app.conf.worker_soft_shutdown_timeout < 30
    assert app.conf.worker_enable_soft_shutdown_on_idle is True


def test_workers_leave_out_celery_s_per_task_lines_unless_the_project_sets_their_level() -> None:
    import logging

    import workers.app  # noqa: F401

    # Left to the workers' default: no INFO line per task ("succeeded").
    assert logging.getLogger("celery.app.trace").level == logging.WARNING
    # Given a level in this project's LOGGING (tests/settings.py): kept.
    assert logging.getLogger("celery.worker.strategy").level == logging.INFO


@pytest.mark.timeout(300)
async def test_a_worker_stopped_with_sigterm_finishes_the_fan_out_chunk_it_runs(
    cluster: Any,
) -> None:
    from tests.subscription_schema import OnEvent

    group = f"worker-term-{time.monotonic_ns()}"
    # Ten subscribers in one chunk, each publish sleeping up to 0.6 s: the
    # chunk runs for about three seconds, one publish after the other.
    query = "subscription($g: String) { onEvent(group: $g, sleepMs: 600) { seq } }"
    url = cluster.edge_urls[0] + "subscriptions-confirm/"
    client = gqlws.testing.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
    await client.connect_and_init()
    logs = [worker.log_path for worker in cluster.workers]
    seen = [len(path.read_text(errors="replace")) for path in logs]
    try:
        subs = [await client.subscribe(query, variables={"g": group}) for _ in range(10)]
        with distributed_runtime(cluster.redis.url):
            OnEvent.broadcast.delay(group=group, payload={"seq": 1})
        deadline = time.monotonic() + 30
        received = re.compile(r"Task gqlws\.fanout\[[^\]]+\] received")
        while not any(  # a worker has the chunk: stop them all, whichever it is
            received.search(path.read_text(errors="replace")[start:])
            for path, start in zip(logs, seen, strict=True)
        ):
            assert time.monotonic() < deadline, "no worker took the fan-out"
            await asyncio.sleep(0.02)
        for worker in cluster.workers:
            worker.signal(signal.SIGTERM)
        # Every subscriber gets it once, from the chunk the worker finished
        # while shutting down (no worker is left to run anything else).
        for sub in subs:
            assert (await sub.next(timeout=60))["data"]["onEvent"]["seq"] == 1
        for worker in cluster.workers:
            assert worker.process.wait(60) == 0  # a warm shutdown, not a kill
        for sub in subs:
            with pytest.raises(asyncio.TimeoutError):
                await sub.next(timeout=0.1)
    finally:
        await client.finalize()
        for index in range(len(cluster.workers)):
            cluster.restart_worker(index)
