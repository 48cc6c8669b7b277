"""The worker's fan-out: registered-before filtering, chunks, one write per edge."""

from __future__ import annotations

from collections.abc import Sequence

from broadcast import Delivery, DeliveryKind, EventKind, InMemoryFabric
from gqlws.remote import fan_out


async def test_a_big_group_is_split_into_chunks_and_only_earlier_subscribers_count() -> None:
    fabric = InMemoryFabric()
    delivered: dict[str, list[Sequence[Delivery]]] = {"a": [], "b": []}
    for edge in delivered:
        fabric.attach_edge(edge, delivered[edge].append)
    for index in range(10):
        await fabric.register("a" if index % 2 else "b", f"s{index}", ["g"], None)
    event = fabric.issue("g", EventKind.UNSUBSCRIBE, b"")
    await fabric.register("a", "late", ["g"], None)  # after the event: not a subscriber of it

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
