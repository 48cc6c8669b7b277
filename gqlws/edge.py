"""``Edge``: where deliveries meet connections, back in order.

An edge owns WebSockets. It registers their subscriptions with the fabric
and receives, from any thread, batches of deliveries for them. It routes
each delivery to its subscription's ``InOrder`` buffer (one per group) on
the event loop, and hands what the buffer releases to the subscription's
target, the consumer, in offset order.

In embedded mode there is one edge per event loop (a server has one; a test
suite may run many loops one after the other).

Race handled here: a delivery can arrive while its subscription's
registration is still on its way back from the fabric (a Redis round trip),
before the edge knows the registration offsets. Such deliveries are held
and replayed through the buffer once the offsets are known, instead of
being dropped as unknown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcast import Delivery, EpochChanged, Fabric, InOrder, Position, Reply

from . import runtime

__all__ = ["Edge", "Target"]

LOG = logging.getLogger(__name__)

Target = Callable[[Delivery], None]
"""Receives a subscription's deliveries in order, on the edge's loop."""


@dataclass
class _Route:
    target: Target
    orders: dict[str, InOrder[Delivery]] | None = None
    early: list[Delivery] = field(default_factory=list)


class Edge:
    """Routes deliveries to the subscriptions of this loop's connections."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Edge] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, fabric: Fabric) -> None:
        self.edge_id = uuid.uuid4().hex
        self.fabric = fabric
        self._loop = loop
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        #: Deliveries dropped as duplicates (a fan-out that ran twice).
        self.duplicates = 0
        fabric.attach_edge(self.edge_id, self._sink)

    @classmethod
    def current(cls) -> Edge:
        """The edge of the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        edge = cls._by_loop.get(loop)
        fabric = runtime.fabric()
        if edge is None or edge.fabric is not fabric:
            edge = cls._by_loop[loop] = cls(loop, fabric)
        return edge

    def __len__(self) -> int:
        return len(self._routes)

    async def subscribe(
        self, sub_id: str, groups: Sequence[str], data: Any, target: Target
    ) -> dict[str, Position]:
        """Register a subscription; from now on its deliveries go to ``target``."""
        route = self._routes[sub_id] = _Route(target)
        try:
            positions = await self.fabric.register(self.edge_id, sub_id, groups, data)
        except BaseException:
            self._routes.pop(sub_id, None)
            raise
        route.orders = {g: InOrder(p.epoch, p.offset) for g, p in positions.items()}
        early: list[Delivery | Reply] = list(route.early)
        route.early = []
        self._route(early)
        return positions

    async def unsubscribe(self, sub_id: str) -> None:
        """Forget a subscription; deliveries still on their way are dropped."""
        if self._routes.pop(sub_id, None) is not None:
            await self.fabric.unregister(self.edge_id, sub_id)

    def expect_reply(self, request_id: str) -> asyncio.Future[bytes]:
        """A future resolved with the body of the reply to ``request_id``."""
        future = self._replies[request_id] = self._loop.create_future()
        future.add_done_callback(lambda _: self._replies.pop(request_id, None))
        return future

    def _sink(self, deliveries: Sequence[Delivery | Reply]) -> None:
        # Called from fan-out threads: hop onto the loop.
        try:
            self._loop.call_soon_threadsafe(self._route, deliveries)
        except RuntimeError:  # the loop is closed: this edge is gone
            self.fabric.detach_edge(self.edge_id)

    def _route(self, deliveries: Sequence[Delivery | Reply]) -> None:
        for delivery in deliveries:
            if isinstance(delivery, Reply):
                waiting = self._replies.get(delivery.request_id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(delivery.body)
                continue
            route = self._routes.get(delivery.sub_id)
            if route is None:
                continue  # unsubscribed meanwhile
            if route.orders is None:
                route.early.append(delivery)
                continue
            order = route.orders.get(delivery.group)
            if order is None:
                LOG.error("Delivery for a group the subscription is not in: %r", delivery)
                continue
            try:
                released = order.push(delivery.epoch, delivery.offset, delivery)
            except EpochChanged:
                LOG.warning("Group %r changed epoch under %r", delivery.group, delivery.sub_id)
                continue
            if not released and delivery.offset <= order.last:
                self.duplicates += 1
            for item in released:
                try:
                    route.target(item)
                except Exception:
                    LOG.exception("Delivering to subscription %r failed", delivery.sub_id)
