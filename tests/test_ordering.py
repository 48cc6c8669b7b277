"""``broadcast.InOrder``: offset order, duplicates, gaps, and no buffer while nothing waits."""

from __future__ import annotations

import pytest

from broadcast import InOrder
from broadcast.ordering import EpochChanged


def test_items_are_released_in_offset_order_once_each() -> None:
    order: InOrder[str] = InOrder("e1", 41)
    assert order.push("e1", 43, "b") == []
    assert order.waiting and order.missing() == [42]
    assert order.push("e1", 42, "a") == ["a", "b"]
    assert order.push("e1", 42, "a") == [] and order.duplicates == 1
    assert order.last == 43 and not order.waiting and order.missing() == []
    with pytest.raises(EpochChanged):
        order.push("e2", 44, "c")


def test_an_order_holds_no_buffer_until_a_gap_and_none_once_it_is_filled() -> None:
    # One per subscription and group, for as long as the subscription lives.
    order: InOrder[str] = InOrder("e1", 0)
    assert order.push("e1", 1, "a") == ["a"]
    assert order._pending is None
    order.push("e1", 3, "c")
    assert order._pending == {3: "c"}
    assert order.push("e1", 2, "b") == ["b", "c"]
    assert order._pending is None
