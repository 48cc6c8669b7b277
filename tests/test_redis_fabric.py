"""``broadcast.redis.RedisFabric`` against a private redis-server (never a shared one).

Each test gets its own key prefix on one server for the module; the tests
that restart Redis get a server of their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import broadcast.redis as redis_fabric_module
from broadcast import (
    Delivery,
    DeliveryKind,
    EventKind,
    HistoryLost,
    HistoryTrimmed,
    Reply,
    SharedDelivery,
)
from broadcast.redis import RedisFabric
from tests.redis_server import RedisServer, redis_server

PUBLISH = EventKind.PUBLISH


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    """A raw client on the private server, to look at and tamper with keys."""
    raw = redis.Redis.from_url(server.url)
    yield raw
    raw.close()


def make_fabric(url: str, **options: Any) -> RedisFabric:
    # Quick heartbeats so that tests see them; a long TTL so that no edge of
    # a slow test expires unless the test expires it (by setting its score).
    options = {"heartbeat_interval": 0.1, "heartbeat_ttl": 30.0, **options}
    return RedisFabric(url, prefix=f"t{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture
def fabric(server: RedisServer) -> Iterator[RedisFabric]:
    made = make_fabric(server.url)
    yield made
    made.close()


@pytest.fixture
async def edge_fabric(fabric: RedisFabric) -> AsyncIterator[RedisFabric]:
    """The fabric, with every edge attached by the test closed on the test's loop."""
    yield fabric
    for edge_id in list(fabric._edges):
        await fabric.aclose_edge(edge_id)
    await fabric.aclose()


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Still not true after {timeout} s")
        await asyncio.sleep(0.01)


class Collector:
    """A sink that keeps every batch it receives."""

    def __init__(self) -> None:
        self.batches: list[list[Delivery | Reply]] = []

    def __call__(self, batch: Sequence[Delivery | Reply]) -> None:
        self.batches.append(list(batch))

    @property
    def items(self) -> list[Delivery | Reply]:
        return [item for batch in self.batches for item in batch]


def result(sub_id: str, group: str, epoch: str, offset: int, body: bytes = b"") -> Delivery:
    return Delivery(sub_id, group, epoch, offset, DeliveryKind.RESULT, body)


# ---- Issue and history ------------------------------------------------------


def test_offsets_increase_by_one_per_issue_and_are_per_group(fabric: RedisFabric) -> None:
    a = [fabric.issue("a", PUBLISH, f"a{i}".encode()) for i in range(3)]
    b = [fabric.issue("b", PUBLISH, b"b")]
    assert [e.offset for e in a] == [1, 2, 3]
    assert [e.offset for e in b] == [1]
    assert len({e.epoch for e in a}) == 1
    assert a[0].epoch != b[0].epoch
    assert a[2].payload == b"a2" and a[2].kind is PUBLISH and a[2].group == "a"


def test_an_idempotency_key_returns_the_first_event(fabric: RedisFabric) -> None:
    first = fabric.issue("g", EventKind.UNSUBSCRIBE, b"first", key="k1")
    again = fabric.issue("g", PUBLISH, b"second", key="k1")
    other = fabric.issue("g", PUBLISH, b"other", key="k2")
    assert again == first
    assert again.kind is EventKind.UNSUBSCRIBE and again.payload == b"first"
    assert other.offset == 2


def test_history_returns_the_events_after_an_offset(fabric: RedisFabric) -> None:
    events = [fabric.issue("g", PUBLISH, bytes([i])) for i in range(5)]
    epoch = events[0].epoch
    assert fabric.history("g", 2, epoch) == events[2:]
    assert fabric.history("g", 0, epoch) == events
    assert fabric.history("g", 5, epoch) == []
    assert fabric.event_at("g", epoch, 4) == events[3]
    with pytest.raises(HistoryLost):
        fabric.history("g", 7, epoch)  # the future is not history
    with pytest.raises(HistoryLost):
        fabric.history("g", 2, "another epoch")
    with pytest.raises(HistoryLost):
        fabric.history("never issued", 0, epoch)
    with pytest.raises(HistoryLost):
        fabric.event_at("g", epoch, 6)


def test_trimmed_history_raises_history_trimmed(server: RedisServer, client: redis.Redis) -> None:
    fabric = make_fabric(server.url, history_length=10)
    events = [fabric.issue("g", PUBLISH, b"x") for _ in range(400)]
    epoch = events[0].epoch
    # Trimming is approximate (whole stream nodes) but bounded.
    assert client.xlen(fabric._group_base("g") + "events") < 400
    with pytest.raises(HistoryTrimmed, match="no longer holds offset 1"):
        fabric.history("g", 0, epoch)
    with pytest.raises(HistoryTrimmed):
        fabric.event_at("g", epoch, 1)
    assert fabric.history("g", 395, epoch) == events[395:]
    fabric.close()


def test_a_flushed_redis_loses_history_and_the_next_issue_starts_a_new_epoch(
    fabric: RedisFabric, client: redis.Redis
) -> None:
    old = [fabric.issue("g", PUBLISH, b"x") for _ in range(3)]
    client.flushall()
    with pytest.raises(HistoryLost, match="new epoch") as lost:
        fabric.history("g", 1, old[0].epoch)
    assert not isinstance(lost.value, HistoryTrimmed)  # nothing of that epoch will come
    with pytest.raises(HistoryLost) as lost:
        fabric.event_at("g", old[0].epoch, 3)
    assert not isinstance(lost.value, HistoryTrimmed)
    new = fabric.issue("g", PUBLISH, b"y")
    assert new.epoch != old[0].epoch
    assert new.offset == 1
    assert fabric.history("g", 0, new.epoch) == [new]


def test_concurrent_issues_from_8_threads_get_offsets_1_to_4000_without_duplicates(
    fabric: RedisFabric,
) -> None:
    def issue_many(_: int) -> list[int]:
        return [fabric.issue("busy", PUBLISH, b"x").offset for _ in range(500)]

    with ThreadPoolExecutor(8) as pool:
        per_thread = list(pool.map(issue_many, range(8)))
    for offsets in per_thread:
        assert offsets == sorted(offsets)  # two calls in a row keep their order
    assert sorted(o for offsets in per_thread for o in offsets) == list(range(1, 4001))


def test_group_names_of_any_characters_keep_their_keys_apart_and_in_one_slot(
    fabric: RedisFabric, client: redis.Redis
) -> None:
    names = ["a", "a}:idem:x", "a b", "{a}", "ü/π %7D", "a}"]
    # Unescaped, this idempotency key of "a" would be the events key of "a}:idem:x".
    first = fabric.issue("a", PUBLISH, b"x", key="x}:events")
    events = {name: fabric.issue(name, PUBLISH, name.encode()) for name in names}
    assert [events[name].offset for name in names] == [2, 1, 1, 1, 1, 1]
    for name in names:
        expected = [b"x", b"a"] if name == "a" else [name.encode()]
        assert [e.payload for e in fabric.history(name, 0, events[name].epoch)] == expected
        keys = [
            k if isinstance(k, bytes) else k.encode()
            for k in client.keys(fabric._group_base(name).replace("[", "\\[") + "*")
        ]
        assert len(keys) == (3 if name == "a" else 2)  # meta, events (and an idempotency key)
        assert len({key_slot(key) for key in keys}) == 1
    assert fabric.issue("a", PUBLISH, b"again", key="x}:events") == first


def test_constructing_the_fabric_needs_no_running_redis() -> None:
    fabric = RedisFabric("redis://127.0.0.1:1/0")
    with pytest.raises(redis.ConnectionError):
        fabric.issue("g", PUBLISH, b"x")
    fabric.close()


# ---- Registry -------------------------------------------------------------------


async def test_register_returns_the_position_current_at_registration(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    first = await fabric.register("e1", "s1", ["g", "h", "g"], b"data")
    assert set(first) == {"g", "h"}
    assert first["g"].offset == 0 and first["h"].offset == 0
    issued = fabric.issue("g", PUBLISH, b"x")
    assert issued.epoch == first["g"].epoch
    second = await fabric.register("e1", "s2", ["g"], b"data")
    assert second["g"].offset == 1 and second["g"].epoch == first["g"].epoch


async def test_subscribers_before_an_offset_are_exactly_those_registered_before_it(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    positions: dict[str, int] = {}
    for i in range(6):
        fabric.issue("g", PUBLISH, b"x")
        got = await fabric.register("e1", f"s{i}", ["g"], {"n": i, "raw": b"\x00"})
        positions[f"s{i}"] = got["g"].offset
    last = fabric.issue("g", PUBLISH, b"x").offset
    for offset in range(1, last + 1):
        found = list(fabric.subscribers("g", offset))
        assert [s.sub_id for s in found] == [s for s, p in positions.items() if p < offset]
        assert fabric.subscriber_count("g", offset) == len(found)
    subscriber = next(s for s in fabric.subscribers("g", last) if s.sub_id == "s3")
    assert subscriber.edge_id == "e1"
    assert subscriber.data == {"n": 3, "raw": b"\x00"}
    assert subscriber.positions["g"].offset == positions["s3"]


async def test_registration_racing_issues_splits_them_exactly_at_its_position(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    fabric.issue("race", PUBLISH, b"x")
    stop = threading.Event()
    issued: list[int] = []

    def issue_until_stopped() -> None:
        while not stop.is_set():
            issued.append(fabric.issue("race", PUBLISH, b"x").offset)

    thread = threading.Thread(target=issue_until_stopped)
    thread.start()
    try:
        positions = {}
        for i in range(30):
            got = await fabric.register("e1", f"s{i:02}", ["race"], b"")
            positions[f"s{i:02}"] = got["race"].offset
    finally:
        stop.set()
        thread.join()
    for offset in range(1, max(issued) + 1):
        found = {s.sub_id for s in fabric.subscribers("race", offset)}
        assert found == {s for s, p in positions.items() if p < offset}, offset


async def test_subscribers_are_sliced_in_registration_order_and_counted(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    for i in range(7):
        await fabric.register(f"e{i % 2}", f"s{i}", ["g"], i)
        fabric.issue("g", PUBLISH, b"x")
    everyone = [s.sub_id for s in fabric.subscribers("g", 100)]
    assert everyone == [f"s{i}" for i in range(7)]
    assert [s.sub_id for s in fabric.subscribers("g", 100, 2, 5)] == everyone[2:5]
    assert [s.sub_id for s in fabric.subscribers("g", 100, 5)] == everyone[5:]
    assert list(fabric.subscribers("g", 100, 3, 3)) == []
    assert list(fabric.subscribers("g", 100, 5, 2)) == []
    assert [s.sub_id for s in fabric.subscribers("g", 100, -2)] == everyone[-2:]
    assert [s.sub_id for s in fabric.subscribers("g", 4, 1, 3)] == ["s1", "s2"]
    assert fabric.subscriber_count("g", 100) == 7
    assert fabric.subscriber_count("g", 4) == 4


async def test_a_burst_of_registrations_beyond_the_pool_waits_for_connections(
    edge_fabric: RedisFabric, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thousand clients reconnecting at once: the default pool raised
    # MaxConnectionsError past its size and lost those registrations.
    monkeypatch.setattr(redis_fabric_module, "ASYNC_POOL_SIZE", 3)
    fabric = edge_fabric
    await asyncio.gather(*(fabric.register("e1", f"s{i}", ["g"], i) for i in range(200)))
    assert fabric.subscriber_count("g", 1) == 200
    await asyncio.gather(*(fabric.unregister("e1", f"s{i}") for i in range(200)))
    assert fabric.subscriber_count("g", 1) == 0


async def test_still_registered_names_the_subscriptions_an_edge_holds(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    await fabric.register("e1", "s1", ["g"], b"")
    await fabric.register("e1", "s2", ["g"], b"")
    await fabric.unregister("e1", "s2")
    assert fabric.still_registered("e1", ["s1", "s2", "s3"]) == {"s1"}
    assert fabric.still_registered("e2", ["s1"]) == set()
    assert fabric.still_registered("e1", []) == set()


async def test_unregister_removes_a_subscription_from_all_its_groups(
    edge_fabric: RedisFabric,
) -> None:
    fabric = edge_fabric
    await fabric.register("e1", "s1", ["g", "h"], b"")
    await fabric.register("e1", "s2", ["g"], b"")
    await fabric.unregister("e1", "s1")
    await fabric.unregister("e1", "unknown")
    assert [s.sub_id for s in fabric.subscribers("g", 1)] == ["s2"]
    assert list(fabric.subscribers("h", 1)) == []
    assert fabric.subscriber_count("h", 1) == 0


async def test_registering_an_id_again_replaces_its_groups(edge_fabric: RedisFabric) -> None:
    fabric = edge_fabric
    await fabric.register("e1", "s1", ["g", "h"], b"old")
    fabric.issue("h", PUBLISH, b"x")
    again = await fabric.register("e1", "s1", ["h", "k"], b"new")
    assert again["h"].offset == 1
    assert list(fabric.subscribers("g", 10)) == []
    [subscriber] = fabric.subscribers("h", 10)
    assert subscriber.data == b"new" and set(subscriber.positions) == {"h", "k"}


async def test_a_group_keeps_its_epoch_while_it_has_subscribers_and_expires_after(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    base = fabric._group_base("g")
    fabric.issue("g", PUBLISH, b"x")
    assert 0 < client.pttl(base + "meta") <= fabric.history_ttl * 1000
    await fabric.register("e1", "s1", ["g"], b"")
    fabric.issue("g", PUBLISH, b"x")
    assert client.pttl(base + "meta") == -1  # never expires under a subscriber
    assert client.pttl(base + "subs") == -1
    assert client.pttl(base + "events") > 0
    await fabric.unregister("e1", "s1")
    assert client.pttl(base + "meta") > 0
    assert not client.exists(base + "subs")


# ---- Edges ------------------------------------------------------------------------


async def test_deliveries_and_replies_reach_the_attached_edge_in_order_and_in_batches(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    sink = Collector()
    fabric.attach_edge("edge1", sink)
    expected: list[Delivery | Reply] = []
    for batch in range(5):
        deliveries = [result(f"s{i}", "g", "ep", batch * 3 + i, b"b") for i in range(3)]
        fabric.deliver("edge1", deliveries)
        fabric.reply("edge1", f"r{batch}", b"answer")
        expected += [*deliveries, Reply(f"r{batch}", b"answer")]
    fabric.deliver("edge1", [])  # nothing to send: no entry
    await until(lambda: len(sink.items) >= len(expected))
    assert sink.items == expected
    assert len(sink.batches) <= 10  # one entry per batch, one sink call per read at most
    stream = fabric._edge_base("edge1") + "stream"
    await until(lambda: client.xlen(stream) == 0)  # read entries are trimmed


async def test_a_shared_delivery_travels_as_one_item_with_its_subscriptions(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    sink = Collector()
    fabric.attach_edge("edge1", sink)
    shared = SharedDelivery(("a", "b", "c"), "g", "ep", 7, DeliveryKind.RESULT, "{}", 1.5)
    fabric.deliver("edge1", [result("s", "g", "ep", 7), shared])
    await until(lambda: len(sink.items) >= 2)
    single, received = sink.items
    assert single == result("s", "g", "ep", 7)
    assert isinstance(received, SharedDelivery) and received == shared
    assert received.sub_ids == ("a", "b", "c") and received.issued_at == 1.5


def _xtrims(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_xtrim", {}).get("calls", 0))


async def test_read_entries_are_trimmed_when_the_reader_idles_not_after_every_read(
    edge_fabric: RedisFabric, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_fabric_module, "TRIM_INTERVAL", 3600.0)  # only the idle trim
    fabric = edge_fabric
    sink = Collector()
    fabric.attach_edge("edge1", sink)
    stream = fabric._edge_base("edge1") + "stream"
    await until(lambda: "edge1" in fabric._edges)
    trims = _xtrims(client)
    for index in range(20):  # a reply at a time, each read alone (a quiet edge's queries)
        fabric.reply("edge1", f"r{index}", b"answer")
        await until(lambda n=index + 1: len(sink.items) >= n)
    assert _xtrims(client) == trims, "a trim per read"
    assert client.xlen(stream) == 20
    await until(lambda: client.xlen(stream) == 0)  # once a read finds nothing new
    assert _xtrims(client) == trims + 1
    assert [item.request_id for item in sink.items] == [f"r{i}" for i in range(20)]


async def test_a_malformed_stream_entry_is_dropped_and_the_reader_goes_on(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    sink = Collector()
    fabric.attach_edge("edge1", sink)
    client.xadd(fabric._edge_base("edge1") + "stream", {"t": "d", "b": b"\xc1garbage"})
    fabric.deliver("edge1", [result("s", "g", "ep", 1)])
    await until(lambda: sink.items)
    assert sink.items == [result("s", "g", "ep", 1)]


async def test_deliver_to_an_unknown_or_detached_edge_creates_no_stream(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    fabric.deliver("nobody", [result("s", "g", "ep", 1)])
    fabric.reply("nobody", "r", b"")
    assert not client.exists(fabric._edge_base("nobody") + "stream")
    fabric.attach_edge("gone", Collector())
    tasks = fabric._edges["gone"].tasks
    await fabric.register("gone", "s1", ["g"], b"")
    fabric.detach_edge("gone")
    # Its tasks end, and a heartbeat that was in flight is cleaned up after.
    await until(lambda: all(task.done() for task in tasks) and not fabric._finishing)
    fabric.deliver("gone", [result("s1", "g", "ep", 1)])
    assert client.zscore(fabric._edges_key, "gone") is None
    assert not client.exists(fabric._edge_base("gone") + "stream")
    assert not client.exists(fabric._edge_base("gone") + "subs")
    assert list(fabric.subscribers("g", 10)) == []


async def test_a_reply_to_an_edge_not_registered_is_dropped_with_a_warning(
    edge_fabric: RedisFabric, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    fabric = edge_fabric
    sink = Collector()
    fabric.attach_edge("edge1", sink)
    await until(lambda: client.zscore(fabric._edges_key, "edge1") is not None)
    with caplog.at_level(logging.WARNING, logger="broadcast.redis"):
        fabric.reply("edge1", "answered", b"")
        fabric.reply("nobody", "lost-request", b"")
    await until(lambda: sink.items)
    assert [item.request_id for item in sink.items] == ["answered"]
    [warning] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "lost-request" in warning and "nobody" in warning and "not registered" in warning


async def test_a_dead_edge_is_swept_with_its_registrations_and_stream(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    await fabric.register("dead", "s1", ["g", "h"], b"")
    await fabric.register("alive", "s2", ["g"], b"")
    fabric.deliver("dead", [result("s1", "g", "ep", 1)])
    assert client.exists(fabric._edge_base("dead") + "stream")
    assert fabric.sweep_dead_edges() == []  # both heartbeats are fresh
    client.zadd(fabric._edges_key, {"dead": 1.0})  # its heartbeat expired long ago
    assert fabric.sweep_dead_edges() == ["dead"]
    assert fabric.sweep_dead_edges() == []  # idempotent
    assert [s.sub_id for s in fabric.subscribers("g", 10)] == ["s2"]
    assert list(fabric.subscribers("h", 10)) == []
    assert not client.exists(fabric._edge_base("dead") + "stream")
    assert not client.exists(fabric._edge_base("dead") + "subs")
    assert client.zscore(fabric._edges_key, "dead") is None
    assert client.pttl(fabric._group_base("h") + "meta") > 0


async def test_an_attached_edge_sweeps_dead_edges_from_its_heartbeat(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    await fabric.register("dead", "s1", ["g"], b"")
    client.zadd(fabric._edges_key, {"dead": 1.0})
    fabric.attach_edge("alive", Collector())
    await until(lambda: fabric.subscriber_count("g", 10) == 0)
    assert client.zscore(fabric._edges_key, "dead") is None
    assert client.zscore(fabric._edges_key, "alive") is not None


async def test_an_edge_swept_while_alive_is_told_at_its_next_heartbeat(
    edge_fabric: RedisFabric, client: redis.Redis
) -> None:
    fabric = edge_fabric
    lost = asyncio.Event()
    sink = Collector()
    fabric.attach_edge("late", sink, on_lost=lost.set)
    await fabric.register("late", "s1", ["g"], b"")
    client.zadd(fabric._edges_key, {"late": 1.0})  # as if its loop had stalled
    assert fabric.sweep_dead_edges() == ["late"]
    await asyncio.wait_for(lost.wait(), 5)
    positions = await fabric.register("late", "s1", ["g"], b"")
    fabric.deliver("late", [result("s1", "g", positions["g"].epoch, 1)])
    await until(lambda: sink.items)


async def test_the_reader_survives_a_redis_restart_and_the_edge_is_told_to_register_again() -> None:
    with redis_server() as server:
        fabric = make_fabric(server.url)
        lost = asyncio.Event()
        sink = Collector()
        fabric.attach_edge("edge1", sink, on_lost=lost.set)
        before = await fabric.register("edge1", "s1", ["g"], b"")
        fabric.deliver("edge1", [result("s1", "g", before["g"].epoch, 1)])
        await until(lambda: len(sink.items) == 1)

        server.stop()
        with pytest.raises(redis.ConnectionError):
            fabric.issue("g", PUBLISH, b"x")  # sync calls fail; their callers retry
        server.start()  # an empty Redis on the same port

        await asyncio.wait_for(lost.wait(), 10)
        after = await fabric.register("edge1", "s1", ["g"], b"")
        assert after["g"].epoch != before["g"].epoch  # the loss shows as a new epoch
        event = fabric.issue("g", PUBLISH, b"x")
        assert (event.epoch, event.offset) == (after["g"].epoch, 1)
        fabric.deliver("edge1", [result("s1", "g", event.epoch, 1)])
        await until(lambda: len(sink.items) == 2, timeout=10)
        assert sink.items[1] == result("s1", "g", event.epoch, 1)

        await fabric.aclose_edge("edge1")
        await fabric.aclose()
        fabric.close()


async def test_sweepers_racing_each_other_remove_each_dead_edge_exactly_once(
    edge_fabric: RedisFabric, server: RedisServer, client: redis.Redis
) -> None:
    fabric = edge_fabric
    dead = [f"dead{i}" for i in range(20)]
    for edge_id in dead:
        await fabric.register(edge_id, "s", ["g"], b"")
    client.zadd(fabric._edges_key, dict.fromkeys(dead, 1.0))
    other = RedisFabric(server.url, prefix=fabric.prefix)  # another process, say
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(RedisFabric.sweep_dead_edges, [fabric, other, fabric, other]))
    other.close()
    assert sorted(e for swept in results for e in swept) == sorted(dead)
    assert fabric.subscriber_count("g", 10) == 0
    assert client.zcard(fabric._edges_key) == 0
