"""``manage.py gqlws status``: edges publish their stats, the command reads the fabric.

The unit tests run against a private redis-server (never a shared one);
the last test runs the command as a subprocess against the cluster
harness (2 Daphne edges, Celery workers) while clients hold subscriptions.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.management import call_command

import gqlws
from broadcast import EventKind
from broadcast.inspection import inspect_fabric
from broadcast.redis import RedisFabric
from gqlws import status
from gqlws.settings import Settings
from tests.conftest import distributed_runtime
from tests.processes import ROOT, free_port
from tests.redis_server import RedisServer, redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    raw = redis.Redis.from_url(server.url)
    yield raw
    raw.close()


@pytest.fixture
async def fabric(server: RedisServer) -> AsyncIterator[RedisFabric]:
    """A fabric with its own key prefix; edges attached by the test are closed after it."""
    made = RedisFabric(
        server.url, prefix=f"t{uuid.uuid4().hex[:8]}", heartbeat_interval=0.1, heartbeat_ttl=30.0
    )
    yield made
    for edge_id in list(made._edges):
        await made.aclose_edge(edge_id)
    await made.aclose()
    made.close()


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Still not true after {timeout} s")
        await asyncio.sleep(0.01)


# ---- The edge's info hash -------------------------------------------------------


async def test_an_edges_heartbeat_publishes_its_stats_and_closing_the_edge_deletes_them(
    fabric: RedisFabric, client: redis.Redis
) -> None:
    stats = {"connections": 3, "subscriptions": 5, "host": "h1", "draining": False}
    fabric.attach_edge("e1", lambda _: None, stats=lambda: stats)
    info_key = fabric._edge_base("e1") + "info"
    await until(lambda: client.hget(info_key, "connections") == b"3")
    info = {k.decode(): v.decode() for k, v in client.hgetall(info_key).items()}
    assert info["host"] == "h1" and info["subscriptions"] == "5"
    assert info["draining"] == "0"  # booleans as 0/1
    assert abs(float(info["beat"]) - time.time()) < 5  # stamped by Redis's clock
    assert 0 < client.pttl(info_key) <= 30_000  # expires by itself if nobody sweeps the edge
    stats["connections"] = 4
    await until(lambda: client.hget(info_key, "connections") == b"4")  # refreshed at each beat
    await fabric.aclose_edge("e1")
    assert not client.exists(info_key)


async def test_a_swept_edge_loses_its_info_with_its_registrations(
    fabric: RedisFabric, client: redis.Redis
) -> None:
    info_key = fabric._edge_base("dead") + "info"
    fabric._scripts["heartbeat"](
        keys=[fabric._edges_key, info_key], args=["dead", 30, "connections", "1"]
    )
    await fabric.register("dead", "s1", ["g"], b"")
    assert client.exists(info_key)
    client.zadd(fabric._edges_key, {"dead": 1.0})  # its heartbeat expired long ago
    assert fabric.sweep_dead_edges() == ["dead"]
    assert not client.exists(info_key)


async def test_stats_that_fail_are_logged_and_the_heartbeat_goes_on(
    fabric: RedisFabric, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("stats bug")

    fabric.attach_edge("e1", lambda _: None, stats=broken)
    await until(lambda: "The stats of edge e1 failed" in caplog.text)
    assert client.zscore(fabric._edges_key, "e1") is not None


# ---- Inspection and the report ------------------------------------------------


async def test_inspection_counts_registrations_and_reads_group_streams(
    fabric: RedisFabric,
) -> None:
    fabric.attach_edge("e1", lambda _: None, stats=lambda: {"connections": 2})
    await fabric.register("e1", "s1", ["app.OnEvent/a"], b"data")
    await fabric.register("e1", "s2", ["app.OnEvent/a", "app.OnEvent/b"], b"data")
    await fabric.register("e2", "s3", ["app.Other"], b"data")
    for _ in range(3):
        fabric.issue("app.OnEvent/a", EventKind.PUBLISH, b"x")
    fabric.issue("app.Quiet/{odd}%name", EventKind.PUBLISH, b"x")  # escaped in its keys
    await until(lambda: fabric._sync.exists(fabric._edge_base("e1") + "info"))
    state = inspect_fabric(fabric)

    edges = {edge.edge_id: edge for edge in state.edges}
    assert set(edges) == {"e1", "e2"}
    assert edges["e1"].subscriptions == 2 and edges["e1"].info["connections"] == "2"
    assert edges["e1"].beat_age is not None and edges["e1"].beat_age < 5
    assert edges["e1"].group_sets == {("app.OnEvent/a",): 1, ("app.OnEvent/a", "app.OnEvent/b"): 1}
    assert edges["e2"].info == {} and edges["e2"].beat_age is None  # registered, never beat
    groups = {group.group: group for group in state.groups}
    assert set(groups) == {"app.OnEvent/a", "app.OnEvent/b", "app.Other", "app.Quiet/{odd}%name"}
    assert (groups["app.OnEvent/a"].subscriptions, groups["app.OnEvent/a"].last_offset) == (2, 3)
    assert groups["app.OnEvent/a"].stream_length == 3
    assert groups["app.Quiet/{odd}%name"].subscriptions == 0
    assert groups["app.Quiet/{odd}%name"].epoch

    document = status.report(state, redis_url="redis://:secret@h:1/0", prefix=fabric.prefix)
    assert document["redis"] == "redis://:***@h:1/0"  # never the password
    assert {c["class"]: c["subscriptions"] for c in document["classes"]} == {
        "app.OnEvent": 2,  # s2 is in two groups, one subscription
        "app.Other": 1,
        "app.Quiet": 0,
    }
    by_name = {g["name"]: g for g in document["groups"]}
    assert (by_name["app.OnEvent/b"]["class"], by_name["app.OnEvent/b"]["group"]) == (
        "app.OnEvent",
        "b",
    )
    assert by_name["app.Other"]["group"] is None  # the class's default group
    assert document["totals"] == {"edges": 2, "connections": 2, "subscriptions": 3, "groups": 4}
    table = status.render(document)
    assert "e1" in table and "app.OnEvent" in table and "  a " in table and "(default)" in table
    assert "more groups" not in table
    assert "... and 3 more groups" in status.render(document, groups_shown=1)
    assert json.loads(json.dumps(document)) == document


def test_in_embedded_mode_status_says_the_state_is_out_of_reach_and_succeeds() -> None:
    assert status.collect(Settings())["mode"] == "embedded"
    out = io.StringIO()
    call_command("gqlws", "status", stdout=out)
    assert "embedded mode" in out.getvalue()
    out = io.StringIO()
    call_command("gqlws", "status", "--json", stdout=out)
    assert json.loads(out.getvalue())["mode"] == "embedded"


def test_an_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(REDIS_URL=url)
    with pytest.raises(status.FabricUnreachable, match=r"Cannot read redis://127\.0\.0\.1"):
        status.collect(settings)


# ---- On the cluster ---------------------------------------------------------------


def run_status(cluster: Any, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", "gqlws", "status", *args],
        cwd=ROOT,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def edges_by_pid(document: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {edge["pid"]: edge for edge in document["edges"] if edge["pid"] is not None}


async def test_status_shows_both_edges_connections_and_subscriptions_per_class_and_group(
    cluster: Any,
) -> None:
    from tests.subscription_schema import OnEvent

    tag = uuid.uuid4().hex[:6]
    on_event, on_chat = (
        "tests.subscription_schema.OnEvent",
        "tests.subscription_schema.OnChatMessage",
    )
    news = "tests.subscription_schema.SharedNews"
    # What other tests left (an edge joins the fabric with its first connection).
    before = json.loads(run_status(cluster, "--json"))
    pids = [edge.pid for edge in cluster.edges]
    base = {pid: (edges_by_pid(before).get(pid) or {}).get("connections") or 0 for pid in pids}
    classes = {c["class"]: c["subscriptions"] for c in before["classes"]}
    on_event_in = "subscription($g: String) { onEvent(group: $g) { seq } }"
    on_chat_in = "subscription($r: String!) { onChatMessage(chatroom: $r) { text } }"
    plan = [  # edge, then the subscriptions of one connection
        (0, [(on_event_in, {"g": f"a-{tag}"}), (on_chat_in, {"r": f"room-{tag}"})]),
        (0, [(on_event_in, {"g": f"a-{tag}"})]),
        (1, [(on_event_in, {"g": f"b-{tag}"}), ("subscription { sharedNews { text } }", {})]),
    ]
    clients, subs = [], []
    try:
        for edge, subscriptions in plan:
            url = cluster.edge_urls[edge] + "subscriptions-confirm/"
            client = gqlws.testing.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
            await client.connect_and_init()
            clients.append(client)
            for query, variables in subscriptions:
                subs.append(await client.subscribe(query, variables=variables))
        with distributed_runtime(cluster.redis.url):
            for seq in range(3):
                OnEvent.broadcast.delay(group=f"a-{tag}", payload={"seq": seq})
        for sub in (subs[0], subs[2]):  # both subscribers of a-<tag> got all three
            assert [(await sub.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(3)] == [
                0,
                1,
                2,
            ]

        expected = {pids[0]: base[pids[0]] + 2, pids[1]: base[pids[1]] + 1}
        deadline = time.monotonic() + 30
        while True:  # the edges publish their counts at their next heartbeat (0.5 s here)
            document = json.loads(run_status(cluster, "--json"))
            found = {pid: edges_by_pid(document)[pid]["connections"] for pid in pids}
            if found == expected:
                break
            assert time.monotonic() < deadline, f"connections {found}, expected {expected}"
            await asyncio.sleep(0.2)

        edges = edges_by_pid(document)
        for pid in pids:
            assert edges[pid]["state"] == "live"
            assert edges[pid]["heartbeat_age"] < 3.0
            assert edges[pid]["stream_length"] >= 0
        groups = {g["name"]: g for g in document["groups"]}
        assert groups[f"{on_event}/a-{tag}"]["subscriptions"] == 2
        assert groups[f"{on_event}/b-{tag}"]["subscriptions"] == 1
        assert groups[f"{on_chat}/room-{tag}"]["subscriptions"] == 1
        assert groups[f"{on_event}/a-{tag}"]["class"] == on_event
        assert groups[f"{on_event}/a-{tag}"]["group"] == f"a-{tag}"
        assert groups[f"{on_event}/a-{tag}"]["epoch"]
        assert groups[f"{on_event}/a-{tag}"]["last_offset"] == 3
        assert groups[f"{on_event}/a-{tag}"]["stream_length"] == 3
        assert groups[news]["group"] is None and groups[news]["subscriptions"] >= 1
        counts = {c["class"]: c["subscriptions"] for c in document["classes"]}
        assert counts[on_event] == classes.get(on_event, 0) + 3
        assert counts[on_chat] == classes.get(on_chat, 0) + 1

        table = run_status(cluster)
        for pid in pids:
            assert edges[pid]["id"] in table
        assert on_event in table and f"  a-{tag}" in table and f"  room-{tag}" in table
    finally:
        for client in clients:
            await client.finalize()
