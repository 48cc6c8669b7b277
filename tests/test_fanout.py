"""The worker's fan-out: registered-before filtering, chunks, one write per edge."""

from __future__ import annotations

import asyncio
import json
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


async def test_a_worker_coerces_a_subscription_s_variables_once_for_all_its_notifications(
    graphql_coercions: list[object],
) -> None:
    from gqlws.remote import consumer_path, serialized_snapshot
    from tests.subscription_schema import SubscriptionConsumer

    fabric = InMemoryFabric()
    delivered: list[Sequence[Delivery]] = []
    fabric.attach_edge("a", delivered.append)
    registration = serialize(
        {
            "consumer": consumer_path(SubscriptionConsumer),
            "query": "subscription($g: String) { onEvent(group: $g) { event } }",
            "operation_name": None,
            "variables": {"g": "coerced-once"},
            "scope": serialized_snapshot({"type": "websocket"}),
            "op_id": "1",
            "cohort": None,
        }
    )
    for index in range(5):
        await fabric.register("a", f"s{index}", ["coerced-once"], registration)
    for seq in range(3):
        event = fabric.issue("coerced-once", EventKind.PUBLISH, serialize({"event": f"e{seq}"}))
        # In a thread, as on a worker: never on an event loop's.
        count = await asyncio.to_thread(
            fan_out, fabric, "coerced-once", event.epoch, event.offset, chunk_size=100
        )
        assert count == 5
    received = [json.loads(d.body)["data"]["onEvent"]["event"] for b in delivered for d in b]
    assert received == [f"e{seq}" for seq in range(3) for _ in range(5)]
    assert graphql_coercions == []  # 15 notifications, no coercion by graphql-core


def test_remembered_variables_tell_values_of_other_types_apart() -> None:
    from gqlws.execution import coerced_variables, document_cache, graphql_schema
    from tests.subscription_schema import SubscriptionConsumer

    gql = graphql_schema(SubscriptionConsumer.schema)
    prepared = document_cache(gql).prepare(
        'subscription($ms: Int) { onEvent(group: "g", sleepMs: $ms) { event } }'
    )
    assert coerced_variables(gql, prepared, {"ms": 1}) == {"ms": 1}
    # Equal to 1 as a dict key, but not an Int: coerced (and refused) on its own.
    assert coerced_variables(gql, prepared, {"ms": True}) is None
    assert coerced_variables(gql, prepared, {"ms": 1}) == {"ms": 1}
    assert coerced_variables(gql, prepared, {"ms": [1]}) is None  # not hashable
