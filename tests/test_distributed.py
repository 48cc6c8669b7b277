"""Distributed mode specifics: work runs on workers, order holds across edges and workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

import gqlws
from tests.conftest import distributed_runtime
from tests.processes import ROOT


@pytest.fixture
async def edge_clients(cluster: Any) -> Any:
    clients: list[gqlws.GraphqlWsClient] = []

    async def make(edge: int, path: str = "subscriptions-confirm/") -> gqlws.GraphqlWsClient:
        transport = gqlws.GraphqlWsTransportAiohttp(cluster.edge_urls[edge] + path)
        transport.TIMEOUT = 60
        client = gqlws.testing.GraphqlWsClient(transport)
        await client.connect_and_init()
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.connected:
            await client.finalize()


@pytest.mark.timeout(600)  # heavy: generous on a loaded 2-core machine
async def test_two_thousand_delayed_broadcasts_from_a_third_process_reach_both_edges_in_order(
    cluster: Any, edge_clients: Any
) -> None:
    group = "third-process"
    query = "subscription($g: String) { onEvent(group: $g, sleepMs: 5) { seq } }"
    subs = []
    for edge in (0, 1):
        client = await edge_clients(edge)
        subs.append(await client.subscribe(query, variables={"g": group}))
    script = textwrap.dedent(
        f"""
        import django
        django.setup()
        from tests.subscription_schema import OnEvent
        for seq in range(2000):
            OnEvent.broadcast.delay(group={group!r}, payload={{"seq": seq}})
        """
    )
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, env=cluster.env, stderr=subprocess.PIPE
    )

    async def collect(sub: Any) -> list[int]:
        return [(await sub.next(timeout=60))["data"]["onEvent"]["seq"] for _ in range(2000)]

    received = await asyncio.wait_for(asyncio.gather(*(collect(sub) for sub in subs)), 180)
    _, stderr = await asyncio.wait_for(sender.communicate(), 60)
    assert sender.returncode == 0, stderr.decode()
    for seqs in received:
        assert seqs == list(range(2000))  # complete, in order, no duplicates
    for sub in subs:
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(timeout=0.3)  # and nothing more


async def test_resolvers_run_on_workers_and_see_the_connections_user_and_context(
    cluster: Any, edge_clients: Any
) -> None:
    from django.contrib.auth.models import User

    def create_user() -> None:
        User.objects.filter(username="worker-user").delete()
        User.objects.create_user("worker-user", password="secret")

    await sync_to_async(create_user)()
    client = await edge_clients(0)
    where = await client.execute("{ process }")
    worker_pids = {worker.pid for worker in cluster.workers}
    edge_pids = {edge.pid for edge in cluster.edges}
    pid = int(where["data"]["process"].rsplit(" ", 1)[1])
    assert pid in worker_pids and pid not in edge_pids

    assert await client.execute("{ whoami }") == {"data": {"whoami": "anonymous"}}
    login = 'mutation { login(username: "worker-user", password: "secret") { ok } }'
    assert await client.execute(login) == {"data": {"login": {"ok": True}}}
    assert await client.execute("{ whoami }") == {"data": {"whoami": "worker-user"}}
    # An async resolver runs on the worker's loop, where Django refuses the
    # database: the user still loads (in a thread of its own).
    assert await client.execute("{ asyncWhoami }") == {"data": {"asyncWhoami": "worker-user"}}

    await client.execute('mutation { setName(name: "stored by a worker") { ok } }')
    assert await client.execute('{ contextValue(key: "name") }') == {
        "data": {"contextValue": "stored by a worker"}
    }
    other = await edge_clients(1)
    assert await other.execute("{ whoami }") == {"data": {"whoami": "anonymous"}}


async def test_a_workers_async_fields_of_one_query_run_at_once(
    cluster: Any, edge_clients: Any
) -> None:
    client = await edge_clients(0)
    key = uuid.uuid4().hex
    # Each field waits until both are resolving: one after the other, neither meets.
    query = f'{{ a: asyncMeet(key: "{key}", parties: 2) b: asyncMeet(key: "{key}", parties: 2) }}'
    assert await client.execute(query) == {"data": {"a": "met", "b": "met"}}


async def test_a_context_value_that_cannot_travel_is_an_error_naming_the_key(
    cluster: Any, edge_clients: Any
) -> None:
    client = await edge_clients(0)
    with pytest.raises(gqlws.GraphqlWsResponseError) as error:
        await client.execute("mutation { storeUnsendable { ok } }")
    assert "info.context.unsendable" in str(error.value)
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}


async def test_the_test_process_broadcasts_through_redis_in_distributed_runtime(
    cluster: Any, edge_clients: Any
) -> None:
    from tests.subscription_schema import OnEvent

    client = await edge_clients(1)
    sub = await client.subscribe('subscription { onEvent(group: "from-test") { seq } }')
    with distributed_runtime(cluster.redis.url):
        event = OnEvent.broadcast.delay(group="from-test", payload={"seq": 7})
    assert event.offset >= 1
    assert await sub.next(timeout=30) == {"data": {"onEvent": {"seq": 7}}}


async def test_a_lost_worker_gives_the_client_an_error_and_the_connection_keeps_working(
    cluster: Any, edge_clients: Any
) -> None:
    client = await edge_clients(0)
    slow = await client.start("{ sleep(seconds: 30) }")
    for index in range(len(cluster.workers)):
        cluster.kill_worker(index)  # whichever took it, it is gone (or never ran it)
    started = asyncio.get_running_loop().time()
    with pytest.raises(gqlws.GraphqlWsResponseError) as error:
        await client.receive(wait_id=slow)
    assert "ran at most once" in str(error.value)
    assert asyncio.get_running_loop().time() - started < 25
    for index in range(len(cluster.workers)):
        cluster.restart_worker(index)
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}


async def test_an_edge_killed_is_swept_and_its_clients_resume_on_the_other_edge(
    cluster: Any, edge_clients: Any
) -> None:
    import redis

    from tests.subscription_schema import OnEvent

    group = f"edge-kill-{asyncio.get_running_loop().time()}"
    query = "subscription($g: String) { onEvent(group: $g) { seq } }"
    doomed_client, surviving_client = await edge_clients(0), await edge_clients(1)
    doomed = await doomed_client.subscribe(query, variables={"g": group})
    surviving = await surviving_client.subscribe(query, variables={"g": group})
    store = redis.Redis.from_url(cluster.redis.url)
    edges_before = {member.decode() for member in store.zrange("gqlws:edges", 0, -1)}
    with distributed_runtime(cluster.redis.url):
        for seq in range(3):
            OnEvent.broadcast.delay(group=group, payload={"seq": seq})
        for sub in (doomed, surviving):
            assert [(await sub.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(3)] == [
                0,
                1,
                2,
            ]
        try:
            cluster.kill_edge(0)
            for seq in range(3, 6):
                OnEvent.broadcast.delay(group=group, payload={"seq": seq})
            seqs = [(await surviving.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(3)]
            assert seqs == [3, 4, 5]  # the other edge's subscribers are unaffected

            def swept() -> bool:
                live = {member.decode() for member in store.zrange("gqlws:edges", 0, -1)}
                dead = edges_before - live
                return bool(dead) and not any(
                    store.exists(f"gqlws:{{e:{edge}}}:stream") for edge in dead
                )

            deadline = asyncio.get_running_loop().time() + 15  # heartbeat TTL is 3 s here
            while not swept():
                assert asyncio.get_running_loop().time() < deadline, "dead edge not swept"
                await asyncio.sleep(0.1)
            fabric_count = store.zcard(f"gqlws:{{g:{OnEvent._group_name(group)}}}:subs")
            assert fabric_count == 1  # only the surviving edge's subscription is registered

            # The dead edge's client reconnects to the other edge and resumes.
            url = cluster.edge_urls[1] + "subscriptions-confirm/"
            again = gqlws.testing.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
            await again.connect_and_init()
            resumed = await again.subscribe(query, variables={"g": group}, resume=doomed)
            seqs = [(await resumed.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(3)]
            assert seqs == [3, 4, 5]
            await again.finalize()
        finally:
            cluster.restart_edge(0)
            store.close()


@pytest.mark.timeout(600)  # heavy: generous on a loaded 2-core machine
async def test_a_worker_killed_during_fan_out_loses_no_notification(cluster: Any) -> None:
    from tests.subscription_schema import OnEvent

    group, count, broadcasts = f"worker-kill-{asyncio.get_running_loop().time()}", 200, 1000
    query = "subscription($g: String) { onEvent(group: $g) { seq } }"
    clients = []
    try:
        for index in range(count):
            url = cluster.edge_urls[index % 2] + "subscriptions-confirm/"
            client = gqlws.testing.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
            await client.connect_and_init()
            clients.append((client, await client.subscribe(query, variables={"g": group})))

        async def collect(sub: Any) -> list[int]:
            return [
                (await sub.next(timeout=120))["data"]["onEvent"]["seq"] for _ in range(broadcasts)
            ]

        collecting = [asyncio.ensure_future(collect(sub)) for _, sub in clients]
        with distributed_runtime(cluster.redis.url):
            for seq in range(broadcasts):
                OnEvent.broadcast.delay(group=group, payload={"seq": seq})
                if seq == broadcasts // 3:
                    cluster.kill_worker(0)  # SIGKILL, mid fan-out
                    cluster.restart_worker(0)
        received = await asyncio.wait_for(asyncio.gather(*collecting), 300)
        for seqs in received:
            assert seqs == list(range(broadcasts))  # every one, once, in order
    finally:
        for client, _ in clients:
            await client.finalize()


async def test_an_edge_stopped_with_sigterm_finishes_work_closes_with_1012_and_leaves_no_loss(
    cluster: Any, edge_clients: Any, tmp_path: Any
) -> None:
    """SIGTERM on edge A: running work ends, the socket closes with 1012, A leaves the
    fabric at once, and a subscriber that resumes on edge B misses nothing, twice nothing."""
    import signal

    import redis

    from broadcast.inspection import inspect_fabric
    from broadcast.redis import RedisFabric
    from tests.subscription_schema import OnEvent

    group = f"drain-{asyncio.get_running_loop().time()}"
    query = "subscription($g: String) { onEvent(group: $g) { seq } }"
    effects = tmp_path / "effects"
    client = await edge_clients(0)
    sub = await client.subscribe(query, variables={"g": group})
    fabric = RedisFabric(cluster.redis.url, heartbeat_ttl=3.0, heartbeat_interval=0.5)
    store = redis.Redis.from_url(cluster.redis.url)
    closed, away, resumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    sent = 0

    async def broadcast() -> None:
        nonlocal sent
        await asyncio.to_thread(OnEvent.broadcast.delay, group=group, payload={"seq": sent})
        sent += 1

    async def broadcaster() -> int:
        while not closed.is_set():  # before the SIGTERM and during the drain
            await broadcast()
            await asyncio.sleep(0.05)
        for _ in range(3):  # while the client is away
            await broadcast()
        away.set()
        await resumed.wait()
        for _ in range(5):  # once it resumed on edge B
            await broadcast()
        return sent

    received: list[int] = []

    async def read_on_a() -> int | None:
        with pytest.raises(gqlws.transport.GraphqlWsConnectionClosed) as ended:
            while True:
                received.append((await sub.next(timeout=30))["data"]["onEvent"]["seq"])
        return ended.value.code

    async def until(predicate: Any, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.02)

    def edge_a_id() -> str | None:
        for edge in inspect_fabric(fabric).edges:
            if edge.info.get("pid") == str(cluster.edges[0].pid):
                return edge.edge_id
        return None

    tasks: list[asyncio.Future[Any]] = []
    try:
        await until(edge_a_id, "edge A never published its info")
        doomed = edge_a_id()
        with distributed_runtime(cluster.redis.url):
            sending = asyncio.ensure_future(broadcaster())
            reading = asyncio.ensure_future(read_on_a())
            tasks += [sending, reading]
            mutation = "mutation($p: String!) { recordThenSleep(path: $p, seconds: 1.5) { ok } }"
            running = await client.start(mutation, variables={"p": str(effects)})
            answer = asyncio.ensure_future(client.receive(wait_id=running, timeout=30))
            # The edge has the mutation in flight (a worker runs it) and notifications flow.
            await until(lambda: effects.exists() and len(received) >= 3, "nothing in flight")
            cluster.edges[0].signal(signal.SIGTERM)
            # In-flight work is not lost; then the socket closes with 1012.
            assert await answer == {"data": {"recordThenSleep": {"ok": True}}}
            assert await asyncio.wait_for(reading, 30) == 1012
            closed.set()
            assert cluster.edges[0].process.wait(30) is not None  # and the edge exits,
            # having left the fabric itself: its heartbeat (3 s TTL) has not expired yet.
            assert store.zscore("gqlws:edges", doomed) is None
            assert not store.exists(f"gqlws:{{e:{doomed}}}:subs", f"gqlws:{{e:{doomed}}}:info")

            await asyncio.wait_for(away.wait(), 30)
            again = await edge_clients(1)
            resuming = await again.subscribe(query, variables={"g": group}, resume=sub)
            resumed.set()
            total = await asyncio.wait_for(sending, 60)
            while len(received) < total:
                received.append((await resuming.next(timeout=30))["data"]["onEvent"]["seq"])
            assert received == list(range(total))  # every one, once, in order
            with pytest.raises(asyncio.TimeoutError):
                await resuming.next(timeout=0.5)  # and nothing more
    finally:
        for task in tasks:
            task.cancel()
        fabric.close()
        store.close()
        cluster.restart_edge(0)


@pytest.mark.timeout(600)  # heavy: generous on a loaded 2-core machine
async def test_a_redis_restart_keeps_sockets_open_and_shows_the_loss_as_a_resync(
    cluster: Any,
) -> None:
    import redis

    from gqlws import runtime
    from tests.subscription_schema import OnEvent

    group = f"redis-restart-{asyncio.get_running_loop().time()}"
    query = "subscription($g: String) { onEvent(group: $g) { seq } }"
    clients, subs = [], []
    try:
        for index in range(100):
            url = cluster.edge_urls[index % 2] + "subscriptions-confirm/"
            client = gqlws.testing.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
            await client.connect_and_init()
            clients.append(client)
            subs.append(await client.subscribe(query, variables={"g": group}))
        with distributed_runtime(cluster.redis.url):
            OnEvent.broadcast.delay(group=group, payload={"seq": 1})
            for sub in subs:
                assert (await sub.next(timeout=30))["data"]["onEvent"]["seq"] == 1

            cluster.redis.stop()  # Redis dies: every stream and registration is lost
            cluster.redis.start()
            store = redis.Redis.from_url(cluster.redis.url)
            fabric = runtime.fabric()
            name = OnEvent._group_name(group)
            deadline = asyncio.get_running_loop().time() + 30
            while fabric.subscriber_count(name, 2**62) < 100:  # edges registered them again
                assert asyncio.get_running_loop().time() < deadline, "not registered again"
                await asyncio.sleep(0.1)
            store.close()
            for client in clients:
                assert client.connected  # no WebSocket was closed
            while True:  # the test process's own connections come back too
                try:
                    OnEvent.broadcast.delay(group=group, payload={"seq": 2})
                    break
                except Exception:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.1)
            for sub in subs:
                with pytest.raises(gqlws.GraphqlWsResponseError) as notice:
                    await sub.next(timeout=30)  # never a silent gap: a resync notice
                assert "RESYNC" in str(notice.value)
                assert (await sub.next(timeout=30))["data"]["onEvent"]["seq"] == 2
    finally:
        for client in clients:
            await client.finalize()


async def test_a_worker_killed_mid_mutation_runs_it_at_most_once(
    cluster: Any, edge_clients: Any, tmp_path: Any
) -> None:
    effects = tmp_path / "effects"
    client = await edge_clients(1)
    mutation = "mutation($p: String!) { recordThenSleep(path: $p, seconds: 3) { ok } }"
    op = await client.start(mutation, variables={"p": str(effects)})
    deadline = asyncio.get_running_loop().time() + 20
    while not effects.exists():  # the mutation is running on a worker
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    for index in range(len(cluster.workers)):
        cluster.kill_worker(index)
    with pytest.raises(gqlws.GraphqlWsResponseError, match="ran at most once"):
        await client.receive(wait_id=op)
    for index in range(len(cluster.workers)):
        cluster.restart_worker(index)
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
    # A second run would have started by now (the queue is served in order)
    # and written its line at once.
    await client.execute("{ sleep(seconds: 0.5) }")
    assert effects.read_text() == "executed\n"
