"""``Edge``: where deliveries meet connections, back in order.

An edge owns WebSockets. It registers their subscriptions with the fabric
and receives, from any thread, batches of deliveries for them (and replies
to the requests it sent to workers). It routes each delivery to its
subscription's ``InOrder`` buffer (one per group) on the event loop, and
hands what the buffer releases to the subscription's target, the consumer,
in offset order.

There is one edge per event loop (a server has one; a test suite may run
many loops one after the other).

Races and losses handled here:

* A delivery can arrive while its subscription's registration is still on
  its way back from the fabric (a Redis round trip), before the edge knows
  the registration offsets. Such deliveries are held and replayed through
  the buffer once the offsets are known, instead of being dropped.
* A gap (a later offset arrived, an earlier one did not) waits
  ``GAP_WAIT``; then the missing events are looked up in the group's
  history and recomputed for this subscriber by a worker, asked again with
  a growing delay until they arrive. Where history no longer has them
  (trimmed, or a new epoch), the subscription ends with a ``LOST``
  delivery: the client must resync. A subscription left behind its group
  with no later offset to show a gap (the fan-out of the last events was
  lost with its worker) is found by comparing positions every few
  ``GAP_WAIT`` periods. (Embedded mode never has gaps: every offset is always
  delivered.)
* The fabric lost the edge's registrations (a Redis restart): every
  subscription is registered again, and where its groups started a new
  epoch the target gets a ``RESYNC`` delivery, so the loss is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcast import (
    Delivery,
    DeliveryKind,
    EpochChanged,
    Fabric,
    HistoryLost,
    InOrder,
    Position,
    Reply,
)

from . import runtime

__all__ = ["Edge", "Target"]

LOG = logging.getLogger(__name__)

Target = Callable[[Delivery], None]
"""Receives a subscription's deliveries in order, on the edge's loop."""

#: Longest wait, in seconds, between two requests to recompute the same gap.
_GAP_RETRY_CAP = 15.0


@dataclass
class _Route:
    target: Target
    groups: tuple[str, ...]
    data: Any
    orders: dict[str, InOrder[Delivery]] | None = None
    early: list[Delivery] = field(default_factory=list)
    #: Per group: (the ``last`` offset a gap check was scheduled at, attempts).
    gap_checks: dict[str, tuple[int, int]] = field(default_factory=dict)


class Edge:
    """Routes deliveries to the subscriptions of this loop's connections."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Edge] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, fabric: Fabric) -> None:
        self.edge_id = uuid.uuid4().hex
        self.fabric = fabric
        self.gap_wait = runtime.settings().GAP_WAIT
        self._loop = loop
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        #: Deliveries dropped as duplicates (a fan-out that ran twice).
        self.duplicates = 0
        fabric.attach_edge(self.edge_id, self._sink, on_lost=self._on_lost)
        self._tails: asyncio.Task[None] | None = None
        if runtime.settings().distributed:
            self._tails = loop.create_task(self._watch_tails())

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

    # ---- Subscriptions ---------------------------------------------------------

    async def subscribe(
        self,
        sub_id: str,
        groups: Sequence[str],
        data: Any,
        target: Target,
        resume: dict[str, Position] | None = None,
    ) -> dict[str, Position]:
        """Register a subscription; from now on its deliveries go to ``target``.

        ``resume`` holds, per group, the position a client last saw (on a
        connection that was lost): what it missed since is recomputed from
        the group's history and delivered first, in order. A position of
        another epoch cannot be resumed: the subscription ends as LOST.
        """
        route = self._routes[sub_id] = _Route(target, tuple(groups), data)
        try:
            positions = await self.fabric.register(self.edge_id, sub_id, groups, data)
        except BaseException:
            self._routes.pop(sub_id, None)
            raise
        route.orders = {g: InOrder(p.epoch, p.offset) for g, p in positions.items()}
        for group, seen in (resume or {}).items():
            current = positions.get(group)
            if current is None:
                continue  # not a group of this subscription
            if seen.epoch != current.epoch:
                self._lose(sub_id, group, "its group's stream was restarted since")
                return positions
            if seen.offset < current.offset:
                route.orders[group] = InOrder(seen.epoch, seen.offset)
                route.orders[group].behind = current.offset
                missed = list(range(seen.offset + 1, current.offset + 1))
                self._loop.create_task(self._fill_gap(sub_id, group, seen.epoch, missed))
                self._schedule_gap_check(sub_id, group, seen.offset, force=True)
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

    # ---- Routing -----------------------------------------------------------------

    def _sink(self, deliveries: Sequence[Delivery | Reply]) -> None:
        # Called from fan-out threads and stream readers: hop onto the loop.
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
                self._lose(delivery.sub_id, delivery.group, "its group's stream was restarted")
                continue
            if not released and delivery.offset <= order.last:
                self.duplicates += 1
            for item in released:
                self._hand(route, item)
            if order.waiting:
                self._schedule_gap_check(delivery.sub_id, delivery.group, order.last)

    def _hand(self, route: _Route, delivery: Delivery) -> None:
        try:
            route.target(delivery)
        except Exception:
            LOG.exception("Delivering to subscription %r failed", delivery.sub_id)

    def _lose(self, sub_id: str, group: str, why: str) -> None:
        """End a subscription whose notifications can no longer all be delivered."""
        route = self._routes.pop(sub_id, None)
        if route is None:
            return
        LOG.warning("Subscription %r lost notifications of %r: %s", sub_id, group, why)
        self._hand(route, Delivery(sub_id, group, "", 0, DeliveryKind.LOST, why))
        self._loop.create_task(self.fabric.unregister(self.edge_id, sub_id))

    # ---- Gaps ----------------------------------------------------------------------

    def _schedule_gap_check(
        self, sub_id: str, group: str, last: int, *, force: bool = False
    ) -> None:
        route = self._routes[sub_id]
        scheduled = route.gap_checks.get(group)
        if scheduled is not None and scheduled[0] == last and not force:
            return  # already being watched at this position
        route.gap_checks[group] = (last, 0)
        self._loop.call_later(self.gap_wait, self._check_gap, sub_id, group, last)

    def _check_gap(self, sub_id: str, group: str, last: int) -> None:
        route = self._routes.get(sub_id)
        if route is None or route.orders is None:
            return
        order = route.orders[group]
        if order.last != last or not (order.waiting or order.behind > order.last):
            return  # filled (or moved on) meanwhile
        _, attempts = route.gap_checks.get(group, (last, 0))
        route.gap_checks[group] = (last, attempts + 1)
        missing = order.missing() or list(range(order.last + 1, order.behind + 1))
        self._loop.create_task(self._fill_gap(sub_id, group, order.epoch, missing))
        # Under load the recomputation waits its turn behind other work: ask
        # again, less and less often, for as long as history holds the events
        # (only HistoryLost ends the subscription).
        delay = min(self.gap_wait * 2 ** (attempts + 1), _GAP_RETRY_CAP)
        self._loop.call_later(delay, self._check_gap, sub_id, group, last)

    async def _fill_gap(self, sub_id: str, group: str, epoch: str, offsets: list[int]) -> None:
        route = self._routes.get(sub_id)
        if route is None or not offsets:
            return
        try:
            for offset in offsets:
                await asyncio.to_thread(self.fabric.event_at, group, epoch, offset)
        except HistoryLost as error:
            self._lose(sub_id, group, str(error))
            return
        except Exception:
            LOG.exception("Looking up a gap of %r in history failed; will retry", group)
            return
        args = (self.edge_id, sub_id, route.data, group, epoch, offsets)
        if runtime.settings().distributed:
            await asyncio.to_thread(runtime.renotify, *args)
        else:
            runtime.renotify(*args)

    # ---- Tails: the last notifications of a group, with nothing after to show a gap ----

    async def _watch_tails(self) -> None:
        """Find subscriptions behind their group's stream with no later delivery coming.

        A gap shows only when a later offset arrives. If the fan-out of a
        group's *last* events was lost (its worker died), nothing arrives to
        show it; so, every few GAP_WAITs, the edge compares each
        subscription's position with its group's and treats one that stayed
        behind for a whole round as a gap.
        """
        previous: dict[tuple[str, str], int] = {}
        while True:
            await asyncio.sleep(self.gap_wait * 4)
            groups = {g for route in self._routes.values() for g in route.groups}
            if not groups:
                previous = {}
                continue
            try:
                positions = await asyncio.to_thread(self.fabric.positions, sorted(groups))
            except Exception:
                LOG.warning("Reading group positions failed; will retry", exc_info=True)
                continue
            current: dict[tuple[str, str], int] = {}
            for sub_id, route in list(self._routes.items()):
                if route.orders is None:
                    continue
                for group, order in route.orders.items():
                    position = positions.get(group)
                    if position is None or position.epoch != order.epoch:
                        continue  # epoch changes show up through deliveries or on_lost
                    if position.offset <= order.last:
                        continue
                    key = (sub_id, group)
                    current[key] = order.last
                    if previous.get(key) == order.last and not order.waiting:
                        order.behind = position.offset
                        self._schedule_gap_check(sub_id, group, order.last, force=True)
            previous = current

    # ---- The fabric lost our registrations (a Redis restart) -----------------------

    def _on_lost(self) -> None:
        """Called from the fabric's heartbeat; re-registers everything on the loop."""
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._reregister()))

    async def _reregister(self) -> None:
        for sub_id, route in list(self._routes.items()):
            if route.orders is None:
                continue
            try:
                positions = await self.fabric.register(
                    self.edge_id, sub_id, route.groups, route.data
                )
            except Exception:
                LOG.exception("Registering %r again failed", sub_id)
                continue
            for group, position in positions.items():
                order = route.orders[group]
                if position.epoch != order.epoch:
                    route.orders[group] = InOrder(position.epoch, position.offset)
                    self._hand(
                        route,
                        Delivery(
                            sub_id,
                            group,
                            position.epoch,
                            position.offset,
                            DeliveryKind.RESYNC,
                            "the group's stream was restarted",
                        ),
                    )
