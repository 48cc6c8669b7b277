"""gqlws's Redis transport for Celery: one client per channel, same messages and acks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from gqlws import kombu_redis
from tests.redis_server import RedisServer, redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def clients_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ``redis.Redis`` clients were built, in a one-element list."""
    built = [0]
    init = redis.Redis.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    return built


def _round_trips(url: str, transport: Any, count: int) -> list[int]:
    """Publish ``count`` messages and consume them with acknowledgements; their bodies."""
    queue = Queue("gqlws-test", Exchange("gqlws-test"), "gqlws-test")
    received = []
    with Connection(url, transport=transport) as connection:
        producer = connection.Producer(serializer="json")
        with connection.SimpleQueue(queue) as simple:
            for index in range(count):
                producer.publish({"n": index}, exchange=queue.exchange, routing_key="gqlws-test")
                message = simple.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            channel = simple.channel
            client = channel.client  # the consumer's own (asynchronous) client
            assert client.zcard(channel.unacked_index_key) == 0, "acknowledged, yet unacked"
            assert client.hlen(channel.unacked_key) == 0
    return received


def test_messages_round_trip_with_one_client_where_kombu_builds_one_per_command(
    server: RedisServer, clients_built: list[int]
) -> None:
    assert _round_trips(server.url, kombu_redis.TRANSPORT, 40) == list(range(40))
    ours = clients_built[0]
    clients_built[0] = 0
    assert _round_trips(server.url, "redis", 40) == list(range(40))
    kombus = clients_built[0]
    # kombu: a client per publish, per receipt (the unacked index) and per ack.
    assert kombus >= 3 * 40
    assert ours < 10, f"{ours} clients built for 40 messages"


def test_a_new_pool_gets_a_new_client(server: RedisServer) -> None:
    with Connection(server.url, transport=kombu_redis.TRANSPORT) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._pool = None  # what kombu does when it drops its connections
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        assert second.ping()


@pytest.mark.parametrize(
    ("url", "transport", "expected"),
    [
        ("redis://127.0.0.1:6379/1", None, kombu_redis.TRANSPORT),
        ("redis://127.0.0.1:6379/1", "myproject.transport:Mine", "myproject.transport:Mine"),
        ("rediss://127.0.0.1:6380/1", None, None),
        ("sentinel://127.0.0.1:26379", None, None),
        ("amqp://guest@127.0.0.1//", None, None),
        ("redis://a:6379/1;redis://b:6379/1", None, None),
    ],
)
def test_used_only_for_a_plain_redis_broker_without_a_chosen_transport(
    url: str, transport: str | None, expected: str | None
) -> None:
    app = Celery("gqlws-test", broker=url, set_as_current=False)
    if transport is not None:
        app.conf.broker_transport = transport
    kombu_redis.use_for(app)
    assert app.conf.broker_transport == expected


def _publish(connection: Connection, queue: Queue, task: str, n: int) -> None:
    connection.Producer(serializer="json").publish(
        {"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, headers={"task": task}
    )


def _unacked(channel: Any) -> tuple[int, int]:
    client = channel.client
    return client.zcard(channel.unacked_index_key), client.hlen(channel.unacked_key)


@pytest.mark.parametrize(
    ("task", "indexed"), [("gqlws.execute", False), ("gqlws.fanout", True), ("other", True)]
)
def test_only_queries_skip_the_visibility_timeout_index(
    server: RedisServer, task: str, indexed: bool
) -> None:
    queue = Queue(f"q-{task}", Exchange(f"q-{task}"), f"q-{task}")
    with Connection(server.url, transport=kombu_redis.TRANSPORT) as connection:
        with connection.SimpleQueue(queue) as simple:
            _publish(connection, queue, task, 1)
            message = simple.get(timeout=5)
            # Received, not acknowledged: what a worker's death would leave behind.
            assert _unacked(simple.channel) == ((1, 1) if indexed else (0, 0))
            message.ack()
            assert _unacked(simple.channel) == (0, 0)
            assert not simple.channel.qos._delivered or simple.channel.qos._dirty


def test_a_query_never_run_goes_back_to_its_queue(server: RedisServer) -> None:
    """A reject with requeue, and the restore of what was received at shutdown."""
    queue = Queue("q-back", Exchange("q-back"), "q-back")
    with Connection(server.url, transport=kombu_redis.TRANSPORT) as connection:
        with connection.SimpleQueue(queue) as simple:
            _publish(connection, queue, "gqlws.execute", 1)
            first = simple.get(timeout=5)
            first.requeue()
            again = simple.get(timeout=5)
            assert again.payload == {"n": 1}
            assert again.headers["redelivered"] is True
            _publish(connection, queue, "gqlws.execute", 2)
            simple.get(timeout=5)  # neither acknowledged
            simple.channel.qos.restore_unacked()
            restored = sorted(simple.get(timeout=5).payload["n"] for _ in range(2))
            assert restored == [1, 2]
            assert _unacked(simple.channel) == (0, 0)


# ---- Sending from the event loop (LoopPublisher) ---------------------------------

REQUEST = {"query": "{ hello }", "scope": b"\x00scope bytes", "variables": {"n": [1, 2.5]}}
OPTIONS = {
    "queue": "lp",
    "serializer": "msgpack",
    "argsrepr": "(1 gqlws arguments)",
    "kwargsrepr": "{}",
}


def _app(url: str) -> Celery:
    app = Celery("gqlws-test", broker=url, set_as_current=False)
    app.conf.accept_content = ["msgpack", "json"]
    kombu_redis.use_for(app)
    return app


def _learned(app: Celery, sends: list[str] | None = None) -> kombu_redis.LoopPublisher:
    """A publisher that learned ``gqlws.execute`` from one message Celery sent."""
    publisher = kombu_redis.LoopPublisher(app)

    def send() -> None:
        if sends is not None:
            sends.append("celery")
        app.send_task("gqlws.execute", args=(REQUEST,), **OPTIONS)

    publisher.learn("gqlws.execute", (REQUEST,), OPTIONS, send)
    return publisher


def _raw(url: str, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue``, oldest first, as kombu's JSON holds them."""
    import json

    client = redis.Redis.from_url(url)
    try:
        return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.delete(queue)
        client.close()


def test_a_task_sent_from_the_loop_is_the_message_celery_sends(server: RedisServer) -> None:
    app = _app(server.url)
    publisher = _learned(app)
    assert publisher.knows("gqlws.execute", OPTIONS)

    async def send() -> None:
        await publisher.send("gqlws.execute", (REQUEST,), OPTIONS)
        await publisher.send("gqlws.execute", (REQUEST,), OPTIONS)

    asyncio.run(send())
    celerys, *ours = _raw(server.url, "lp")
    assert len(ours) == 2
    # What is a message's own: its task id (and root id, correlation id), its
    # delivery tag, and the reply_to of the thread that sent it.
    own = {
        "headers": ("id", "root_id"),
        "properties": ("correlation_id", "delivery_tag", "reply_to"),
    }
    assert ours[0]["headers"]["id"] != ours[1]["headers"]["id"]
    for message in (celerys, *ours):
        assert message["headers"]["root_id"] == message["headers"]["id"]
        assert message["properties"]["correlation_id"] == message["headers"]["id"]
        for part, keys in own.items():
            for key in keys:
                message[part].pop(key)
    assert ours[0] == celerys and ours[1] == celerys


def test_a_worker_runs_what_was_sent_from_the_loop(server: RedisServer) -> None:
    """kombu and Celery's worker-side decoding read the message as one of theirs."""
    app = _app(server.url)
    publisher = _learned(app)
    _raw(server.url, "lp")  # drop the one Celery sent
    asyncio.run(publisher.send("gqlws.execute", (REQUEST,), OPTIONS))
    with Connection(server.url, transport=kombu_redis.TRANSPORT) as connection:
        with connection.SimpleQueue("lp", accept=["msgpack"]) as simple:
            message = simple.get(timeout=5)
            message.ack()
    assert message.headers["task"] == "gqlws.execute"
    assert message.headers["argsrepr"] == "(1 gqlws arguments)"
    assert message.content_type == "application/x-msgpack"
    args, kwargs, embed = message.decode()
    assert args == [REQUEST] and kwargs == {}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_a_message_it_would_build_differently_is_left_to_celery(server: RedisServer) -> None:
    app = _app(server.url)
    app.conf.task_compression = "zlib"  # Celery compresses; the loop would not
    sends: list[str] = []
    publisher = _learned(app, sends)
    assert not publisher.knows("gqlws.execute", OPTIONS)
    publisher.learn("gqlws.execute", (REQUEST,), OPTIONS, lambda: sends.append("celery"))
    assert sends == ["celery", "celery"]
    _raw(server.url, "lp")


def test_nothing_is_sent_from_the_loop_while_publishing_is_observed(server: RedisServer) -> None:
    from celery import signals

    publisher = _learned(_app(server.url))
    _raw(server.url, "lp")

    def observe(**_: Any) -> None:
        pass

    signals.before_task_publish.connect(observe, weak=False)
    try:
        assert not publisher.knows("gqlws.execute", OPTIONS)
    finally:
        signals.before_task_publish.disconnect(observe)
    assert publisher.knows("gqlws.execute", OPTIONS)


class _Runtime:
    """``runtime.send_task_from_loop`` with ``app``, counting what Celery sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, app: Celery) -> None:
        from gqlws import runtime

        self.runtime = runtime
        self.celery_sends = 0
        send_task = app.send_task

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.celery_sends += 1
            return send_task(*args, **kwargs)

        monkeypatch.setattr(app, "send_task", counting)
        monkeypatch.setattr(runtime, "celery_app", lambda: app)
        monkeypatch.setattr(runtime, "_task_options", lambda args: OPTIONS)
        runtime._loop_publisher.cache_clear()

    def send(self, times: int) -> None:
        async def send() -> None:
            for _ in range(times):
                await self.runtime.send_task_from_loop("gqlws.execute", (REQUEST,))

        asyncio.run(send())


@pytest.fixture
def loop_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Celery], _Runtime]]:
    from gqlws import runtime

    yield lambda app: _Runtime(monkeypatch, app)
    runtime._loop_publisher.cache_clear()


def test_the_first_send_goes_through_celery_and_the_next_ones_from_the_loop(
    server: RedisServer, loop_runtime: Callable[[Celery], _Runtime]
) -> None:
    sender = loop_runtime(_app(server.url))
    sender.send(3)
    assert sender.celery_sends == 1
    assert len(_raw(server.url, "lp")) == 3


def test_a_failed_push_is_sent_by_celery(
    server: RedisServer, loop_runtime: Callable[[Celery], _Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = loop_runtime(_app(server.url))
    sender.send(1)
    publisher = sender.runtime._loop_publisher()
    assert publisher is not None and publisher.knows("gqlws.execute", OPTIONS)

    class Down:
        async def lpush(self, *args: Any) -> None:
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(publisher, "_client", lambda: Down())
    sender.send(2)
    assert sender.celery_sends == 3
    assert len(_raw(server.url, "lp")) == 3


def test_other_brokers_send_through_celery(loop_runtime: Callable[[Celery], _Runtime]) -> None:
    app = Celery("gqlws-test", broker="memory://", set_as_current=False)
    sender = loop_runtime(app)
    sender.send(2)
    assert sender.runtime._loop_publisher() is None
    assert sender.celery_sends == 2
