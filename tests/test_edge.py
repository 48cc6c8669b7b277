"""The edge's in-order delivery: early deliveries, duplicates, gaps, lost history, resync."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from prometheus_client import REGISTRY

import gqlws.edge as edge_module
from broadcast import Delivery, DeliveryKind, EventKind, InMemoryFabric, Position, SharedDelivery
from gqlws import runtime
from gqlws.edge import Edge, _repair_tasks


class Recorder:
    """A subscription target that remembers what it was handed, in order."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.changed = asyncio.Event()

    def __call__(self, delivery: Delivery) -> None:
        self.items.append(delivery)
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        async def _wait() -> None:
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.items


async def until_sent(sent: list[Any], timeout: float = 5.0) -> None:
    """Wait until a repair request was sent (``runtime.renotify`` patched to record it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not sent:
        assert asyncio.get_running_loop().time() < deadline, "no repair was requested"
        await asyncio.sleep(0.01)


def result(position: Position, offset: int, group: str = "g", sub_id: str = "s") -> Delivery:
    return Delivery(sub_id, group, position.epoch, offset, DeliveryKind.RESULT, {"n": offset})


@pytest.fixture
async def edge() -> Edge:
    fabric = InMemoryFabric(history_limit=3)
    edge = Edge(asyncio.get_running_loop(), fabric)
    edge.gap_wait = 0.05
    edge.trimmed_gap_wait = 0.2
    return edge


async def test_deliveries_are_released_in_offset_order_and_duplicates_dropped(edge: Edge) -> None:
    target = Recorder()
    position = (await edge.subscribe("s", ["g"], None, target))["g"]
    for offset in (3, 1, 1, 2, 3):
        edge._route([result(position, position.offset + offset)])
    items = await target.wait_for(3)
    assert [d.offset - position.offset for d in items] == [1, 2, 3]
    assert edge.duplicates == 2


async def test_a_shared_delivery_reaches_each_of_its_subscriptions_in_its_own_order(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "renotify", lambda *args: None)
    ahead, behind, gone = Recorder(), Recorder(), Recorder()
    position = (await edge.subscribe("ahead", ["g"], None, ahead))["g"]
    await edge.subscribe("behind", ["g"], None, behind)
    await edge.subscribe("gone", ["g"], None, gone)
    await edge.unsubscribe("gone")

    def shared(offset: int, *sub_ids: str) -> SharedDelivery:
        body = {"n": offset}
        return SharedDelivery(sub_ids, "g", position.epoch, offset, DeliveryKind.RESULT, body)

    first, second = position.offset + 1, position.offset + 2
    edge._route([shared(first, "ahead", "gone")])  # "behind" missed the first
    edge._route([shared(second, "ahead", "behind", "gone")])
    assert [d.offset for d in await ahead.wait_for(2)] == [first, second]
    assert behind.items == []  # the second waits for the first
    edge._route([result(position, first, sub_id="behind")])
    assert [d.offset for d in await behind.wait_for(2)] == [first, second]
    assert gone.items == []
    # Handed as is: one object, the same body, for every subscription.
    assert ahead.items[1] is behind.items[1] and ahead.items[1].body == {"n": second}


async def test_a_shared_delivery_before_registration_ends_is_kept_for_each_subscription(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    fabric = edge.fabric
    registered, release = asyncio.Event(), asyncio.Event()
    register = fabric.register

    async def slow_register(*args: Any) -> Any:
        positions = await register(*args)  # registered in the fabric...
        registered.set()
        await release.wait()  # ...but the edge does not know its position yet
        return positions

    monkeypatch.setattr(fabric, "register", slow_register)
    target = Recorder()
    registering = asyncio.ensure_future(edge.subscribe("early", ["g"], None, target))
    await registered.wait()
    event = fabric.issue("g", EventKind.PUBLISH, b"1")
    kind = DeliveryKind.RESULT
    edge._route([SharedDelivery(("early", "other"), "g", event.epoch, event.offset, kind, "x")])
    assert edge._routes["early"].early == [
        Delivery("early", "g", event.epoch, event.offset, kind, "x")
    ]
    release.set()
    await registering
    assert [(d.sub_id, d.offset) for d in await target.wait_for(1)] == [("early", event.offset)]


async def test_a_gap_that_history_holds_is_recomputed_by_a_worker(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime, "renotify", lambda *args: sent.append(args))
    target = Recorder()
    position = (await edge.subscribe("s", ["g"], b"registration", target))["g"]
    first = edge.fabric.issue("g", EventKind.PUBLISH, b"1")
    second = edge.fabric.issue("g", EventKind.PUBLISH, b"2")
    edge._route([result(position, second.offset)])  # the first one went missing
    await until_sent(sent)
    assert sent[0] == (edge.edge_id, "g", position.epoch, [first.offset], [("s", b"registration")])
    edge._route([result(position, first.offset)])  # what the worker sends back
    assert [d.offset for d in await target.wait_for(2)] == [first.offset, second.offset]


class Rebuilding(Recorder):
    """A target that rebuilds its registration data (what changed since is in it)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def registration_data(self) -> bytes:
        return self.data


async def test_data_not_kept_is_rebuilt_for_a_repair_and_a_new_registration(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime, "renotify", lambda *args: sent.append(args))
    fabric = edge.fabric
    assert isinstance(fabric, InMemoryFabric)
    target = Rebuilding(b"at subscribe")
    position = (await edge.subscribe("s", ["g"], b"at subscribe", target, keep_data=False))["g"]
    assert [s.data for s in fabric.subscribers("g", position.offset + 1)] == [b"at subscribe"]
    assert edge._routes["s"].data is edge_module._REBUILT  # not kept while it idles
    target.data = b"rebuilt"
    first = fabric.issue("g", EventKind.PUBLISH, b"1")
    second = fabric.issue("g", EventKind.PUBLISH, b"2")
    edge._route([result(position, second.offset)])  # the first one went missing
    await until_sent(sent)
    assert sent[0] == (edge.edge_id, "g", position.epoch, [first.offset], [("s", b"rebuilt")])
    fabric._groups.clear()  # what a Redis restart does to the registry and the streams
    fabric._edges.clear()
    await edge._reregister()
    assert [s.data for s in fabric.subscribers("g", 1)] == [b"rebuilt"]


async def test_data_not_kept_needs_a_target_that_rebuilds_it(edge: Edge) -> None:
    with pytest.raises(TypeError, match="registration_data"):
        await edge.subscribe("s", ["g"], b"data", Recorder(), keep_data=False)
    assert len(edge) == 0


async def test_a_gap_history_no_longer_holds_ends_the_subscription_as_lost(edge: Edge) -> None:
    target = Recorder()
    position = (await edge.subscribe("s", ["g"], None, target))["g"]
    events = [edge.fabric.issue("g", EventKind.PUBLISH, b"x") for _ in range(5)]
    edge._route([result(position, events[-1].offset)])  # 1..4 missing, history keeps 3
    [lost] = await target.wait_for(1)
    assert lost.kind is DeliveryKind.LOST
    assert "no longer holds" in lost.body
    assert len(edge) == 0


async def test_a_gap_history_no_longer_holds_still_fills_if_its_fan_out_comes_late(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst issued faster than the workers fan out runs more than a
    # history's length ahead of them: the missing fan-out is late, not lost.
    looked_up = asyncio.Event()
    event_at = edge.fabric.event_at

    def recording_event_at(*args: Any) -> Any:
        try:
            return event_at(*args)
        finally:
            edge._loop.call_soon_threadsafe(looked_up.set)

    monkeypatch.setattr(edge.fabric, "event_at", recording_event_at)
    target = Recorder()
    position = (await edge.subscribe("s", ["g"], None, target))["g"]
    events = [edge.fabric.issue("g", EventKind.PUBLISH, b"x") for _ in range(5)]
    edge._route([result(position, events[-1].offset)])  # 1..4 missing, history keeps 3
    await asyncio.wait_for(looked_up.wait(), 5)  # found trimmed
    edge._route([result(position, event.offset) for event in reversed(events[:-1])])
    released = await target.wait_for(5)
    await asyncio.sleep(edge.trimmed_gap_wait * 2)  # past the time it would have been lost
    assert [d.offset for d in released] == [e.offset for e in events]
    assert {d.kind for d in released} == {DeliveryKind.RESULT}
    assert len(edge) == 1


async def test_a_delivery_to_many_subscriptions_is_routed_a_slice_per_loop_turn(
    edge: Edge,
) -> None:
    # One loop turn for 1,000 sends held back the loop's other work (the
    # reply to the mutation that broadcast, the next frames read) for tens of
    # milliseconds per broadcast.
    count = 3 * edge_module._ROUTE_SLICE + 7
    targets = {f"s{i}": Recorder() for i in range(count)}
    for sub_id, target in targets.items():
        await edge.subscribe(sub_id, ["g"], None, target)
    events = [edge.fabric.issue("g", EventKind.PUBLISH, b"x") for _ in range(2)]
    seen_between: list[int] = []

    def handed() -> int:
        return sum(len(target.items) for target in targets.values())

    def pending() -> float:
        return REGISTRY.get_sample_value("gqlws_edge_pending_deliveries") or 0.0

    before = pending()
    for event in events:
        shared = SharedDelivery(tuple(targets), "g", event.epoch, event.offset, DeliveryKind.RESULT)
        edge._sink([shared])  # as a fan-out on the loop's thread hands it: routed in a callback
    await asyncio.sleep(0)  # the two arrivals run; routing stops after one slice
    assert handed() == edge_module._ROUTE_SLICE
    assert pending() - before == 2  # both batches count as pending until routed
    asyncio.get_running_loop().call_soon(lambda: seen_between.append(handed()))
    deadline = asyncio.get_running_loop().time() + 5
    while handed() < 2 * count:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0)
    assert 0 < seen_between[0] < 2 * count  # other work ran between the slices
    assert pending() == before
    for target in targets.values():
        assert [d.offset for d in target.items] == [e.offset for e in events]  # in order


async def test_a_delivery_of_another_epoch_ends_the_subscription_as_lost(edge: Edge) -> None:
    target = Recorder()
    await edge.subscribe("s", ["g"], None, target)
    edge._route([Delivery("s", "g", "another-epoch", 1, DeliveryKind.RESULT, {})])
    [lost] = await target.wait_for(1)
    assert lost.kind is DeliveryKind.LOST


async def test_deliveries_that_arrive_before_registration_completes_are_kept() -> None:
    fabric = InMemoryFabric()
    edge = Edge(asyncio.get_running_loop(), fabric)
    target = Recorder()
    registered = asyncio.Event()
    original = fabric.register

    async def slow_register(*args: Any) -> dict[str, Position]:
        positions = await original(*args)
        # A fan-out of an event issued right after registration is faster
        # than the registration's answer.
        edge._route([result(positions["g"], positions["g"].offset + 1)])
        registered.set()
        return positions

    fabric.register = slow_register  # type: ignore[method-assign]
    position = (await edge.subscribe("s", ["g"], None, target))["g"]
    assert registered.is_set()
    [item] = await target.wait_for(1)
    assert item.offset == position.offset + 1


async def test_registrations_lost_with_the_store_are_made_again_with_a_resync_notice(
    edge: Edge,
) -> None:
    target = Recorder()
    await edge.subscribe("s", ["g"], None, target)
    fabric = edge.fabric
    assert isinstance(fabric, InMemoryFabric)
    fabric._groups.clear()  # what a Redis restart does to the registry and the streams
    fabric._edges.clear()
    await edge._reregister()
    [notice] = await target.wait_for(1)
    assert notice.kind is DeliveryKind.RESYNC
    assert fabric.registered("g") == 1
    new_position = Position(fabric._groups["g"].epoch, 0)
    edge._route([result(new_position, 1)])
    assert [d.kind for d in await target.wait_for(2)] == [DeliveryKind.RESYNC, DeliveryKind.RESULT]


async def test_subscriptions_with_the_same_gap_are_repaired_by_one_request_per_chunk(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lost fan-out chunk leaves many subscriptions with one gap: one task
    # per subscription flooded the workers' queue; one per chunk does not.
    chunked = dataclasses.replace(runtime.settings(), FANOUT_CHUNK_SIZE=4)
    monkeypatch.setattr(runtime, "settings", lambda: chunked)
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime, "renotify", lambda *args: sent.append(args))
    targets = {f"s{i}": Recorder() for i in range(10)}
    positions = {
        sub_id: (await edge.subscribe(sub_id, ["g"], sub_id.encode(), target))["g"]
        for sub_id, target in targets.items()
    }
    first = edge.fabric.issue("g", EventKind.PUBLISH, b"1")
    second = edge.fabric.issue("g", EventKind.PUBLISH, b"2")
    edge._route([result(positions[s], second.offset, sub_id=s) for s in targets])
    deadline = asyncio.get_running_loop().time() + 5
    while sum(len(args[4]) for args in sent) < len(targets):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert [len(args[4]) for args in sent] == [4, 4, 2]
    assert {args[3] == [first.offset] for args in sent} == {True}
    assert sorted(m for args in sent for m, _ in args[4]) == sorted(targets)


def test_a_big_repair_is_split_into_tasks_of_about_one_fan_out_chunk() -> None:
    members = [(f"s{i}", None) for i in range(10)]
    tasks = list(_repair_tasks(list(range(1, 8)), members, 4))
    # 7 offsets in windows of 4 and 3; 1 subscriber per task (4 // 4, 4 // 3).
    assert [(w, [m for m, _ in c]) for w, c in tasks[:2]] == [
        ([1, 2, 3, 4], ["s0"]),
        ([1, 2, 3, 4], ["s1"]),
    ]
    assert sum(len(w) * len(c) for w, c in tasks) == 7 * 10  # every notification, once
    assert max(len(w) * len(c) for w, c in tasks) <= 4
    assert [len(c) for w, c in _repair_tasks([5], members, 4)] == [4, 4, 2]


async def test_a_worker_skips_the_repair_of_subscriptions_that_left_meanwhile() -> None:
    from gqlws import remote

    fabric = InMemoryFabric()
    delivered: list[Any] = []
    fabric.deliver = lambda edge_id, batch: delivered.extend(batch)  # type: ignore[method-assign]
    await fabric.register("e1", "gone", ["g"], b"")
    await fabric.unregister("e1", "gone")
    event = fabric.issue("g", EventKind.PUBLISH, b"x")
    # Undecodable data: rendering it would raise; a skipped member is never decoded.
    remote.renotify(fabric, "e1", "g", event.epoch, [event.offset], [("gone", b"\xc1")])
    assert delivered == []


async def test_a_repair_is_not_asked_again_while_it_may_still_be_queued(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every retry of a repair still waiting in the workers' queue queued one
    # more: a worker killed mid-burst once left ~3,000 of them.
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runtime, "renotify", lambda *args: sent.append(args))
    position = (await edge.subscribe("s", ["g"], b"r", Recorder()))["g"]
    first = edge.fabric.issue("g", EventKind.PUBLISH, b"1")
    for _ in range(3):
        edge._request_repair("s", "g", position.epoch, [first.offset])
        edge._send_repairs()
        await asyncio.gather(*edge._repairing)
    assert len(sent) == 1
    monkeypatch.setattr(edge_module, "_REPAIR_RETRY", 0.0)  # presumed lost: ask again
    edge._request_repair("s", "g", position.epoch, [first.offset])
    edge._send_repairs()
    await asyncio.gather(*edge._repairing)
    assert len(sent) == 2


async def test_a_repair_request_that_fails_is_logged_not_lost_silently(
    edge: Edge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(*args: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(runtime, "renotify", broker_down)
    position = (await edge.subscribe("s", ["g"], b"r", Recorder()))["g"]
    first = edge.fabric.issue("g", EventKind.PUBLISH, b"1")
    edge._request_repair("s", "g", position.epoch, [first.offset])
    edge._send_repairs()
    await asyncio.gather(*edge._repairing, return_exceptions=True)
    await asyncio.sleep(0)  # done-callbacks run on the next loop turn
    assert "Requesting a repair failed" in caplog.text
    assert "broker unreachable" in caplog.text
