"""The worker's fan-out: registered-before filtering, chunks, one write per edge."""

from __future__ import annotations

from collections.abc import Sequence

from broadcast import Delivery, DeliveryKind, EventKind, InMemoryFabric, SharedDelivery
from gqlws.remote import fan_out
from gqlws.serializer import serialize

NO_COHORT = serialize({"cohort": None})


async def test_a_big_group_is_split_into_chunks_and_only_earlier_subscribers_count() -> None:
    fabric = InMemoryFabric()
    delivered: dict[str, list[Sequence[Delivery]]] = {"a": [], "b": []}
    for edge in delivered:
        fabric.attach_edge(edge, delivered[edge].append)
    for index in range(10):
        await fabric.register("a" if index % 2 else "b", f"s{index}", ["g"], NO_COHORT)
    event = fabric.issue("g", EventKind.UNSUBSCRIBE, b"")
    await fabric.register("a", "late", ["g"], NO_COHORT)  # after the event: not a subscriber of it

    chunks: list[tuple[int, int]] = []
    count = fan_out(
        fabric, "g", event.epoch, event.offset, chunk_size=4, split=lambda *r: chunks.append(r)
    )
    assert count == 4
    assert chunks == [(4, 8), (8, 10)]
    for start, stop in chunks:
        count += fan_out(
            fabric, "g", event.epoch, event.offset, chunk_size=4, start=start, stop=stop
        )
    assert count == 10
    batches = delivered["a"] + delivered["b"]
    assert len(batches) == 6  # one write per edge per chunk
    deliveries = [d for batch in batches for d in batch]
    assert sorted(d.sub_id for d in deliveries) == sorted(f"s{i}" for i in range(10))
    assert {d.kind for d in deliveries} == {DeliveryKind.END}
    assert {d.offset for d in deliveries} == {event.offset}


async def test_five_thousand_identical_subscribers_cost_one_publish_and_one_encoding() -> None:
    import asyncio

    from broadcast import get_fabric, set_fabric
    from gqlws import runtime
    from gqlws.context import OperationContext
    from gqlws.executors import EmbeddedExecutor
    from tests.subscription_schema import SharedNews, SubscriptionConsumer

    fabric = InMemoryFabric()
    set_fabric(fabric)
    try:
        received: list[Delivery | SharedDelivery] = []
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def sink(batch: list[Delivery | SharedDelivery]) -> None:
            received.extend(batch)
            loop.call_soon_threadsafe(done.set)

        fabric.attach_edge("edge", sink)
        prepared = SubscriptionConsumer._documents().prepare("subscription { sharedNews { text } }")
        executor = EmbeddedExecutor()
        for index in range(5000):
            context = OperationContext({"type": "websocket"}, str(index))
            outcome = await executor.run(SubscriptionConsumer, "subscribe", prepared, None, context)
            data = executor.subscriber_data(
                SubscriptionConsumer, prepared, None, context, outcome.cohort
            )
            await fabric.register("edge", f"s{index}", outcome.groups, data)
        SharedNews.calls = 0
        event = runtime.issue(
            SharedNews._group_name(None), EventKind.PUBLISH, serialize({"text": "hi"})
        )
        await asyncio.wait_for(done.wait(), 30)
        assert SharedNews.calls == 1
        # One delivery, encoded once, for all 5000 subscriptions of the edge.
        (shared,) = received
        assert isinstance(shared, SharedDelivery)
        assert sorted(shared.sub_ids) == sorted(f"s{index}" for index in range(5000))
        assert shared.offset == event.offset and shared.kind is DeliveryKind.RESULT
        assert '"text":"hi"' in shared.body
        assert shared.one("s7") == Delivery(
            "s7", shared.group, shared.epoch, shared.offset, shared.kind, shared.body
        )
    finally:
        set_fabric(None)
        assert get_fabric() is not fabric
