"""Metrics (``gqlws.metrics``): each moves when what it counts happens; exposition; workers.

In-process, through Channels' communicator, so that the test reads the same
registry the consumer writes to. Each test compares the registry with a
snapshot taken before it acted: other tests of the run moved the counters
too, and their totals are none of this test's business.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from broadcast import Delivery, DeliveryKind, EventKind, InMemoryFabric
from gqlws import metrics, notify, ops, remote, testing
from gqlws.client import GraphqlWsResponseError
from gqlws.edge import Edge
from gqlws.serializer import serialize
from gqlws.settings import reset_settings
from gqlws.transport import GraphqlWsConnectionClosed
from tests.processes import ROOT, ServerProcess, free_port
from tests.redis_server import redis_server
from tests.subscription_schema import OnEvent, SlowSocketConsumer

ON_EVENT = "subscription($g: String) { onEvent(group: $g) { event seq } }"
ON_EVENT_CLASS = "tests.subscription_schema.OnEvent"

MakeClient = Callable[..., Awaitable[testing.GraphqlWsClient]]


# ---- Reading the registry ---------------------------------------------------------


def value(name: str, **labels: str) -> float:
    """A sample of the default registry; 0 where nothing was recorded yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Since:
    """How far each sample of the default registry moved since this was made."""

    def __init__(self) -> None:
        self._start = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in REGISTRY.collect()
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        start = self._start.get((name, frozenset(labels.items())), 0.0)
        return value(name, **labels) - start


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Connected, initialised clients of the test ASGI application, finalized after."""
    from tests.asgi import application

    clients: list[testing.GraphqlWsClient] = []

    async def make(
        path: str = "subscriptions-confirm/", subprotocol: str = "graphql-transport-ws"
    ) -> testing.GraphqlWsClient:
        transport = testing.GraphqlWsTransport(application, path, subprotocols=[subprotocol])
        client = testing.GraphqlWsClient(transport)
        await client.connect_and_init()
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.connected:
            await client.finalize()


# ---- Connections -------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_connection_counts_as_open_by_its_subprotocol_until_its_disconnect(
    subprotocol: str,
) -> None:
    from tests.asgi import application

    since = Since()
    transport = testing.GraphqlWsTransport(application, "graphql/", subprotocols=[subprotocol])
    await transport.connect()
    assert since("gqlws_connections_open", subprotocol=subprotocol) == 1
    assert since("gqlws_connections_total", subprotocol=subprotocol) == 1
    await transport.disconnect()  # returns once the consumer's disconnect ran
    assert since("gqlws_connections_open", subprotocol=subprotocol) == 0
    assert since("gqlws_connections_closed_total", code="1000", by="client") == 1


async def test_a_connection_refused_for_its_subprotocol_counts_as_a_4406_close_by_the_server() -> (
    None
):
    from tests.asgi import application

    since = Since()
    communicator = WebsocketCommunicator(application, "graphql/", subprotocols=["mqtt"])
    connected, _ = await communicator.connect()
    assert connected  # accepted, explained, closed
    while (await communicator.receive_output(5))["type"] != "websocket.close":
        pass
    await communicator.disconnect()
    assert since("gqlws_connections_total", subprotocol="none") == 1
    assert since("gqlws_connections_open", subprotocol="none") == 0
    assert since("gqlws_connections_closed_total", code="4406", by="server") == 1
    assert since("gqlws_connections_closed_total", code="1000", by="client") == 0


# ---- Operations --------------------------------------------------------------------


async def test_operations_are_counted_by_type_and_outcome_and_timed_by_type(
    make_client: MakeClient,
) -> None:
    client = await make_client("graphql/")
    since = Since()
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
    await client.execute('mutation { setContext(key: "k", value: "v") { ok } }')
    with pytest.raises(GraphqlWsResponseError):
        await client.execute("{ fail }")  # the resolver raises: a result with errors
    with pytest.raises(GraphqlWsResponseError):
        await client.execute("{ noSuchField }")  # does not validate
    assert since("gqlws_operations_total", type="query", outcome="ok") == 1
    assert since("gqlws_operations_total", type="mutation", outcome="ok") == 1
    assert since("gqlws_operations_total", type="query", outcome="error") == 1
    assert since("gqlws_operations_total", type="unknown", outcome="invalid") == 1
    assert since("gqlws_operation_duration_seconds_count", type="query") == 2
    assert since("gqlws_operation_duration_seconds_count", type="mutation") == 1


async def test_a_live_subscription_counts_by_its_class_until_it_is_completed(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    since = Since()
    sub = await client.subscribe(ON_EVENT, variables={"g": unique("gauge")})
    assert since("gqlws_subscriptions_active", subscription=ON_EVENT_CLASS) == 1
    assert since("gqlws_operations_total", type="subscription", outcome="ok") == 1
    with pytest.raises(GraphqlWsResponseError, match="Not allowed to subscribe"):
        await client.subscribe("subscription { forbidden { value } }")
    assert since("gqlws_operations_total", type="subscription", outcome="error") == 1
    await sub.complete()
    await until(lambda: since("gqlws_subscriptions_active", subscription=ON_EVENT_CLASS) == 0)


# ---- Notifications -----------------------------------------------------------------


async def test_a_notification_counts_as_delivered_with_its_latency_and_a_skip_as_skipped(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    group = unique("notify")
    sub = await client.subscribe(ON_EVENT, variables={"g": group})
    since = Since()
    await OnEvent.broadcast(group=group, payload={"skip": True, "seq": 1})
    await OnEvent.broadcast(group=group, payload={"event": "kept", "seq": 2})
    assert (await sub.next(timeout=5))["data"]["onEvent"]["seq"] == 2
    await until(lambda: since("gqlws_notifications_total", outcome="delivered") == 1)
    assert since("gqlws_notifications_total", outcome="skipped") == 1
    assert since("gqlws_notification_latency_seconds_count") == 1
    # The embedded fan-out: one job per event here (one subscriber each).
    await until(lambda: since("gqlws_fanout_chunks_total") == 2)
    assert since("gqlws_fanout_duration_seconds_count") == 2
    assert since("gqlws_fanout_deliveries_total", kind="result") == 1
    assert since("gqlws_fanout_deliveries_total", kind="skip") == 1


async def test_notifications_sent_in_one_loop_turn_are_recorded_together_at_the_next() -> None:
    since = Since()
    issued_at = time.time() - 0.2  # 200 ms ago: the 0.25 s bucket, not the 0.1 s one
    for _ in range(300):
        metrics.notification_sent(issued_at)
    metrics.notification_sent(None)  # counted, no latency
    assert since("gqlws_notifications_total", outcome="delivered") == 0  # same turn
    await asyncio.sleep(0)
    assert since("gqlws_notifications_total", outcome="delivered") == 301
    assert since("gqlws_notification_latency_seconds_count") == 300
    assert since("gqlws_notification_latency_seconds_bucket", le="0.1") == 0
    assert since("gqlws_notification_latency_seconds_bucket", le="0.25") == 300
    assert 300 * 0.2 <= since("gqlws_notification_latency_seconds_sum") < 300 * 0.25


def test_a_notification_sent_without_a_loop_is_recorded_at_once() -> None:
    since = Since()
    metrics.notification_sent(time.time())
    assert since("gqlws_notifications_total", outcome="delivered") == 1
    assert since("gqlws_notification_latency_seconds_count") == 1


def test_observe_many_records_what_observing_each_value_records() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    one_by_one = Histogram("one", "one", buckets=(0.001, 0.01, 1), registry=registry)
    together = Histogram("many", "many", buckets=(0.001, 0.01, 1), registry=registry)
    values = [0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 7.0, -1.0]
    for v in values:
        one_by_one.observe(max(0.0, v))
    metrics.observe_many(together, values)

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for family in registry.collect()
            if family.name == name
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples("one") == samples("many")
    assert ("_count", {}, 8.0) in samples("many")


@pytest.fixture
def slow_gate() -> Iterator[asyncio.Event]:
    """Clear it and the sockets of ``SlowSocketConsumer`` stop writing."""
    gate = asyncio.Event()
    gate.set()
    SlowSocketConsumer.gate = gate
    SlowSocketConsumer.deliveries = 0
    SlowSocketConsumer.stuck = 0
    yield gate
    gate.set()
    SlowSocketConsumer.gate = None


async def _flood(client: testing.GraphqlWsClient, group: str, gate: asyncio.Event) -> Any:
    """Subscribe, stop the socket, send 20 notifications; the subscription."""
    sub = await client.subscribe(ON_EVENT, variables={"g": group})
    gate.clear()
    await OnEvent.broadcast(group=group, payload={"seq": 0})
    await until(lambda: SlowSocketConsumer.stuck == 1)  # the socket holds frame 0
    for seq in range(1, 20):
        await OnEvent.broadcast(group=group, payload={"seq": seq})
    await until(lambda: SlowSocketConsumer.deliveries == 20)
    return sub


async def test_drop_oldest_counts_each_overflow_and_each_dropped_notification(
    make_client: MakeClient, slow_gate: asyncio.Event
) -> None:
    client = await make_client("subscriptions-dropping/")
    since = Since()
    sub = await _flood(client, unique("dropping"), slow_gate)
    # Queue limit 5, frame 0 in the socket: 1-5 queued, each of 6-19 drops one.
    assert since("gqlws_queue_overflows_total", policy="drop_oldest") == 14
    assert since("gqlws_notifications_total", outcome="dropped") == 14
    slow_gate.set()
    for _ in range(6):
        await sub.next(timeout=5)
    await until(lambda: since("gqlws_notifications_total", outcome="delivered") == 6)


async def test_an_overflow_that_closes_counts_the_queue_as_dropped_and_the_1013_close(
    make_client: MakeClient, slow_gate: asyncio.Event
) -> None:
    client = await make_client("subscriptions-slow/")
    since = Since()
    sub = await _flood(client, unique("slow"), slow_gate)
    assert since("gqlws_queue_overflows_total", policy="close") == 1
    assert since("gqlws_notifications_total", outcome="dropped") == 5  # what was queued
    slow_gate.set()
    with pytest.raises(GraphqlWsConnectionClosed):
        while True:
            await sub.next(timeout=5)
    await client.finalize()
    assert since("gqlws_connections_closed_total", code="1013", by="server") == 1


async def test_a_resync_notice_and_a_lost_subscription_count_as_resyncs(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    group = unique("resync")
    sub = await client.subscribe(ON_EVENT, variables={"g": group})
    edge = Edge.current()  # the consumer runs on this loop: the same edge
    full = OnEvent._group_name(group)
    [(sub_id, route)] = [(s, r) for s, r in edge._routes.items() if full in r.groups]
    since = Since()
    # What the edge hands a subscription whose group's stream restarted...
    notice = Delivery(sub_id, full, "epoch", 0, DeliveryKind.RESYNC, "the stream was restarted")
    edge._hand(route, sub_id, notice)
    with pytest.raises(GraphqlWsResponseError, match="resync"):
        await sub.next(timeout=5)
    assert since("gqlws_resyncs_total", kind="resync") == 1
    # ... and what ends one: a delivery of another epoch than it registered in.
    edge._route([Delivery(sub_id, full, "another-epoch", 1, DeliveryKind.RESULT, "{}")])
    with pytest.raises(GraphqlWsResponseError, match="resync"):
        await sub.next(timeout=5)
    assert since("gqlws_resyncs_total", kind="lost") == 1
    await until(lambda: since("gqlws_subscriptions_active", subscription=ON_EVENT_CLASS) == -1)


# ---- The edge's in-order delivery ----------------------------------------------------


async def test_an_early_offset_waits_a_gap_is_filled_and_a_repeat_is_dropped_as_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr(notify, "renotify", lambda *args: asked.append(args))
    fabric = InMemoryFabric()
    edge = Edge(asyncio.get_running_loop(), fabric)
    edge.gap_wait = 0.05
    handed: list[Delivery] = []
    position = (await edge.subscribe("s", ["g"], b"data", handed.append))["g"]
    first = fabric.issue("g", EventKind.PUBLISH, b"1")
    second = fabric.issue("g", EventKind.PUBLISH, b"2")

    def delivered(offset: int, issued_at: float) -> Delivery:
        return Delivery("s", "g", position.epoch, offset, DeliveryKind.RESULT, {}, issued_at)

    since = Since()
    old = time.time() - 60  # a minute old when it reaches the edge
    edge._sink([delivered(second.offset, old)])
    assert value("gqlws_edge_lag_seconds") >= 60
    await until(lambda: bool(asked))  # the missing first offset is asked for again
    assert since("gqlws_reorder_waits_total") == 1
    assert since("gqlws_gap_fills_total") >= 1
    edge._sink([delivered(first.offset, time.time())])  # what the worker sends back
    edge._sink([delivered(first.offset, time.time())])  # and once more
    await until(lambda: since("gqlws_duplicate_deliveries_total") == 1)
    assert [d.offset for d in handed] == [first.offset, second.offset]
    assert since("gqlws_edge_pending_deliveries") == 0


async def test_a_distributed_fan_out_counts_its_chunks_and_carries_the_issue_time_to_the_edge() -> (
    None
):
    from broadcast.redis import RedisFabric

    with redis_server() as server:
        fabric = RedisFabric(server.url, prefix=unique("m"), heartbeat_interval=0.1)
        received: list[Any] = []
        fabric.attach_edge("edge-m", received.extend)
        try:
            for index in range(5):
                data = serialize({"cohort": None})
                await fabric.register("edge-m", f"s{index}", ["g"], data)
            # UNSUBSCRIBE: every subscriber gets an END, no rendering needed.
            event = await asyncio.to_thread(fabric.issue, "g", EventKind.UNSUBSCRIBE, b"")
            assert event.issued_at is not None
            since = Since()
            chunks: list[tuple[int, int]] = []

            def fan_out(start: int = 0, stop: int | None = None) -> int:
                return remote.fan_out(
                    fabric,
                    "g",
                    event.epoch,
                    event.offset,
                    chunk_size=2,
                    start=start,
                    stop=stop,
                    split=lambda a, b: chunks.append((a, b)),
                )

            await asyncio.to_thread(fan_out)
            for start, stop in list(chunks):
                await asyncio.to_thread(fan_out, start, stop)
            assert len(chunks) == 2
            assert since("gqlws_fanout_chunks_total") == 3
            assert since("gqlws_fanout_duration_seconds_count") == 3
            assert since("gqlws_fanout_deliveries_total", kind="end") == 5
            await until(lambda: len(received) == 5)
            assert {d.issued_at for d in received} == {event.issued_at}
        finally:
            await fabric.aclose_edge("edge-m")
            await fabric.aclose()
            fabric.close()


# ---- Exposition -------------------------------------------------------------------------


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_view_serves_every_metric_in_the_prometheus_text_format() -> None:
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    expected = {
        "gqlws_connections_open",
        "gqlws_connections",
        "gqlws_connections_closed",
        "gqlws_operations",
        "gqlws_operation_duration_seconds",
        "gqlws_subscriptions_active",
        "gqlws_notifications",
        "gqlws_notification_latency_seconds",
        "gqlws_queue_overflows",
        "gqlws_resyncs",
        "gqlws_edge_lag_seconds",
        "gqlws_edge_pending_deliveries",
        "gqlws_reorder_waits",
        "gqlws_duplicate_deliveries",
        "gqlws_gap_fills",
        "gqlws_fanout_duration_seconds",
        "gqlws_fanout_chunks",
        "gqlws_fanout_deliveries",
    }
    assert expected <= names


async def test_an_edge_under_daphne_serves_its_own_metrics(daphne_server: ServerProcess) -> None:
    from gqlws import GraphqlWsTransportAiohttp

    url = f"http://127.0.0.1:{daphne_server.port}/metrics"
    key = ("gqlws_connections_total", frozenset({("subprotocol", "graphql-ws")}))
    before = scrape(await asyncio.to_thread(_get, url)).get(key, 0.0)
    transport = GraphqlWsTransportAiohttp(
        f"ws://127.0.0.1:{daphne_server.port}/graphql/", subprotocols=["graphql-ws"]
    )
    await transport.connect()
    try:
        after = scrape(await asyncio.to_thread(_get, url)).get(key, 0.0)
    finally:
        await transport.disconnect()
    assert after - before == 1


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


# ---- Workers ----------------------------------------------------------------------------


@pytest.fixture
def worker_settings() -> Iterator[int]:
    """GQLWS with a worker metrics port on 127.0.0.1; the port."""
    port = free_port()
    saved = getattr(django_settings, "GQLWS", None)
    django_settings.GQLWS = {"WORKER_METRICS_PORT": port, "WORKER_METRICS_ADDR": "127.0.0.1"}
    reset_settings()
    try:
        yield port
    finally:
        ops.stop_worker_metrics_server()
        if saved is None:
            del django_settings.GQLWS
        else:
            django_settings.GQLWS = saved
        reset_settings()


def test_a_ready_worker_serves_its_metrics_on_the_configured_port(worker_settings: int) -> None:
    from celery.signals import worker_ready

    import workers.app  # noqa: F401  (connects the signal handlers)

    metrics.fanout_done(time.perf_counter())  # what a fan-out task records
    worker_ready.send(sender=None)
    samples = scrape(_get(f"http://127.0.0.1:{worker_settings}/metrics"))
    assert samples[("gqlws_fanout_chunks_total", frozenset())] >= 1


def test_with_a_multiprocess_dir_the_exposition_sums_every_process(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What prefork Celery children do: each records in its own files.
    child = (
        "import os, time, django; django.setup()\n"
        "from gqlws import metrics\n"
        "metrics.connection_opened('graphql-ws')\n"
        "metrics.fanout_done(time.perf_counter())\n"
        "print(os.getpid())\n"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    pids = [
        int(
            subprocess.run(
                [sys.executable, "-c", child],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        for _ in range(2)
    ]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = metrics.registry.__wrapped__()  # not the cached one of this process
    assert registry is not REGISTRY
    assert registry.get_sample_value("gqlws_fanout_chunks_total") == 2
    live = {"subprotocol": "graphql-ws"}
    assert registry.get_sample_value("gqlws_connections_open", live) == 2
    ops.mark_process_dead(pids[0])  # what the worker_process_shutdown handler does
    assert registry.get_sample_value("gqlws_connections_open", live) == 1
    assert registry.get_sample_value("gqlws_fanout_chunks_total") == 2  # counters stay
