"""gqlws's Redis transport for Celery: one client per channel, same messages and acks."""

from __future__ import annotations

from collections.abc import Iterator
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
