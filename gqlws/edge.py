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
  history and recomputed by a worker, asked again with a growing delay
  until they arrive. Where history has a new epoch, the subscription ends
  with a ``LOST`` delivery: the client must resync. Where history was
  trimmed, the fan-out may still be on its way (a burst issued faster than
  the workers fan out runs more than a history's length ahead of them): it
  ends so only if the missing events have not arrived ``_REPAIR_RETRY``
  seconds later, when their fan-out is presumed lost. A subscription left
  behind its group with no later offset to show a gap (the fan-out of the
  last events was lost with its worker) is found by comparing positions
  every few ``GAP_WAIT`` periods, once the group has been quiet on this edge
  for a whole round. (Embedded mode never has gaps: every offset is always
  delivered.)
* Repairs are batched: a lost fan-out chunk leaves hundreds of
  subscriptions with the same gap, so the requests of one loop turn are
  grouped by (group, epoch, offsets) and sent as one task per
  ``FANOUT_CHUNK_SIZE`` subscriptions, after one history lookup. One task
  per subscription (what this did first) flooded the workers' queue under
  load with repairs of fan-outs that were merely late, until the real
  fan-outs timed out behind them.
* A batch of deliveries for many subscriptions (a cohort's one delivery
  for 1,000 of them) is routed ``_ROUTE_SLICE`` subscriptions per loop
  turn, batches in arrival order: one turn for all of them kept the loop
  from its other work (replies, frames read, the writes of the sends) for
  tens of milliseconds per broadcast, and a broadcast's own mutation
  waited behind the fan-out of the one before.
* The fabric lost the edge's registrations (a Redis restart): every
  subscription is registered again, and where its groups started a new
  epoch the target gets a ``RESYNC`` delivery, so the loss is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broadcast import (
    Delivery,
    DeliveryKind,
    EpochChanged,
    Fabric,
    HistoryLost,
    HistoryTrimmed,
    InOrder,
    Position,
    Reply,
    SharedDelivery,
)

from . import drain, metrics, runtime

__all__ = ["Edge", "Target"]

LOG = logging.getLogger(__name__)

Target = Callable[[Delivery | SharedDelivery], None]
"""Receives a subscription's deliveries in order, on the edge's loop.

A ``SharedDelivery`` is handed as is to each of its subscriptions: read only
its kind, body and position, never its ``sub_ids``.

A target may also rebuild its subscription's registration data
(``registration_data()``): the edge then does not keep the data, which is
needed again only to repair a gap or to register again after the fabric
lost the registrations (``Edge.subscribe(..., keep_data=False)``)."""

#: Longest wait, in seconds, between two requests to recompute the same gap.
_GAP_RETRY_CAP = 15.0
#: Seconds repair requests are collected before they are sent as batches.
_REPAIR_BATCH_WAIT = 0.02
#: Seconds before the repair of one offset is asked for again (presumed lost).
_REPAIR_RETRY = 10.0

_RepairKey = tuple[str, str, tuple[int, ...]]
#: A subscription to repair: its id and its registration data.
_Member = tuple[str, Any]

#: Subscriptions handed their deliveries per loop turn: a fan-out to many
#: connections is routed in slices, with the loop's other work (replies,
#: frames read, the sends themselves) between them, not in one long turn.
_ROUTE_SLICE = 200

#: When this process started serving, about (its first import of gqlws), for status.
_PROCESS_STARTED = round(time.time(), 3)


@dataclass(slots=True)
class _Route:
    """A registered subscription at its edge: one per subscription, kept while it lives.

    Its containers are made when first needed: most routes never hold an
    early delivery, a gap or a repair, and empty ones would cost ~0.2 KiB
    per idle subscription.
    """

    target: Target
    groups: tuple[str, ...]
    #: The registration data, or ``_REBUILT``: ``target`` rebuilds it (``_data``).
    data: Any
    orders: dict[str, InOrder[Delivery | SharedDelivery]] | None = None
    #: Deliveries that arrived before ``orders`` were known.
    early: list[Delivery] | None = None
    #: Per group: (the ``last`` offset a gap check was scheduled at, attempts).
    gap_checks: dict[str, tuple[int, int]] | None = None
    #: Per group: offset -> loop time its repair was last requested.
    requested: dict[str, dict[int, float]] | None = None


#: ``_Route.data`` of a subscription whose target rebuilds its data.
_REBUILT: Any = object()


def _data(route: _Route) -> Any:
    """The registration data of ``route``'s subscription, rebuilt if it was not kept."""
    if route.data is _REBUILT:
        return route.target.registration_data()  # type: ignore[attr-defined]
    return route.data


def _repair_tasks(
    offsets: list[int], members: list[_Member], size: int
) -> Iterator[tuple[list[int], list[_Member]]]:
    """Split a repair into tasks of at most ``size`` notifications each (about one fan-out chunk).

    A repair of many subscribers times many offsets as one task ran for a
    minute on one worker thread (after a worker died mid-burst) while the
    others idled; as chunks they spread over the fleet like a fan-out.
    """
    for start in range(0, len(offsets), size):
        window = offsets[start : start + size]
        per_task = max(1, size // len(window))
        for first in range(0, len(members), per_task):
            yield window, members[first : first + per_task]


def _log_repair_failure(task: asyncio.Task[None]) -> None:
    # The offsets stay marked as asked: they are asked again after _REPAIR_RETRY.
    if not task.cancelled() and task.exception() is not None:
        LOG.error("Requesting a repair failed; retrying later", exc_info=task.exception())


class Edge:
    """Routes deliveries to the subscriptions of this loop's connections."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Edge] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, fabric: Fabric) -> None:
        runtime.tune_gc()  # this process serves: see there
        self.edge_id = uuid.uuid4().hex
        self.fabric = fabric
        self.gap_wait = runtime.settings().GAP_WAIT
        #: Seconds a gap history no longer holds may still fill before it is lost.
        self.trimmed_gap_wait = _REPAIR_RETRY
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on its loop (Edge.current)
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        #: Deliveries dropped as duplicates (a fan-out that ran twice).
        self.duplicates = 0
        #: Repair requests of this loop turn: (group, epoch, offsets) -> sub ids.
        self._repairs: dict[_RepairKey, list[str]] = {}
        self._repairs_due: asyncio.TimerHandle | None = None
        self._repairing: set[asyncio.Task[None]] = set()
        #: Batches arrived and not yet routed, in order, and where routing of
        #: the first one stands: (index of its delivery, index of a sub id).
        self._backlog: deque[Sequence[Delivery | SharedDelivery | Reply]] = deque()
        self._cursor = (0, 0)
        #: Deliveries routed per group: a group still receiving is not a lost tail.
        self._received: dict[str, int] = {}
        self.closed = False
        fabric.attach_edge(self.edge_id, self._sink, on_lost=self._on_lost, stats=self.stats)
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

    @classmethod
    def of_loop(cls, loop: asyncio.AbstractEventLoop) -> Edge | None:
        """The edge of ``loop`` if it has one (none is created)."""
        return cls._by_loop.get(loop)

    def __len__(self) -> int:
        return len(self._routes)

    def stats(self) -> dict[str, str | int | float | bool]:
        """What this edge publishes with its heartbeats, for ``manage.py gqlws status``."""
        return {
            "connections": drain.open_connections(),
            "subscriptions": len(self._routes),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _PROCESS_STARTED,
            "draining": drain.draining(),
        }

    async def close(self) -> None:
        """Leave the fabric for good: this edge's registrations, stream and info go at once.

        The end of a drain: waiting for the heartbeat TTL to expire instead
        would leave the fan-out computing notifications for subscriptions
        whose clients already moved to another edge.
        """
        if self.closed:
            return
        self.closed = True
        if self._tails is not None:
            self._tails.cancel()
        await self.fabric.aclose_edge(self.edge_id)

    # ---- Subscriptions ---------------------------------------------------------

    async def subscribe(
        self,
        sub_id: str,
        groups: Sequence[str],
        data: Any,
        target: Target,
        resume: dict[str, Position] | None = None,
        *,
        keep_data: bool = True,
    ) -> dict[str, Position]:
        """Register a subscription; from now on its deliveries go to ``target``.

        ``keep_data=False``: ``data`` is not kept while the subscription
        lives; ``target.registration_data()`` rebuilds it when needed again.

        ``resume`` holds, per group, the position a client last saw (on a
        connection that was lost): what it missed since is recomputed from
        the group's history and delivered first, in order. A position of
        another epoch cannot be resumed: the subscription ends as LOST.
        """
        if not keep_data and not callable(getattr(target, "registration_data", None)):
            raise TypeError("keep_data=False needs a target with registration_data()")
        kept = data if keep_data else _REBUILT
        route = self._routes[sub_id] = _Route(target, tuple(groups), kept)
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
                self._request_repair(sub_id, group, seen.epoch, missed)
                self._schedule_gap_check(sub_id, group, seen.offset, force=True)
        early, route.early = route.early, None
        if early:
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

    def _sink(self, deliveries: Sequence[Delivery | SharedDelivery | Reply]) -> None:
        # Called from fan-out threads, and from the stream reader on the loop
        # itself (no wake-up of the loop through its self-pipe then): routed
        # in a callback of their own on the loop either way.
        metrics.deliveries_arrived(deliveries)
        try:
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._arrived, deliveries)
            else:
                self._loop.call_soon_threadsafe(self._arrived, deliveries)
        except RuntimeError:  # the loop is closed: this edge is gone
            metrics.deliveries_routed(len(deliveries))
            self.fabric.detach_edge(self.edge_id)

    def _arrived(self, deliveries: Sequence[Delivery | SharedDelivery | Reply]) -> None:
        self._backlog.append(deliveries)
        if len(self._backlog) == 1:  # else a slice is already scheduled
            self._route_slice()

    def _route_slice(self) -> None:
        """Route up to ``_ROUTE_SLICE`` subscriptions' deliveries; the rest in a later turn."""
        backlog = self._backlog
        budget = _ROUTE_SLICE
        index, start = self._cursor
        while backlog:
            batch = backlog[0]
            while index < len(batch):
                if budget <= 0:
                    self._cursor = (index, start)
                    self._loop.call_soon(self._route_slice)
                    return
                delivery = batch[index]
                if isinstance(delivery, SharedDelivery):
                    sub_ids = delivery.sub_ids
                    stop = min(len(sub_ids), start + budget)
                    for position in range(start, stop):
                        self._route_one(sub_ids[position], delivery)
                    budget -= stop - start
                    if stop < len(sub_ids):
                        start = stop
                        continue
                    start = 0
                else:
                    self._route_single(delivery)
                    budget -= 1
                index += 1
            backlog.popleft()
            metrics.deliveries_routed(len(batch))  # pending until routed, not until queued
            index = 0
        self._cursor = (0, 0)

    def _route(self, deliveries: Sequence[Delivery | SharedDelivery | Reply]) -> None:
        for delivery in deliveries:
            if isinstance(delivery, SharedDelivery):
                # One object for all its subscriptions: what they are handed
                # reads the same for each (kind, body, position), so it is
                # handed as is.
                for sub_id in delivery.sub_ids:
                    self._route_one(sub_id, delivery)
            else:
                self._route_single(delivery)

    def _route_single(self, delivery: Delivery | Reply) -> None:
        if isinstance(delivery, Delivery):
            self._route_one(delivery.sub_id, delivery)
            return
        waiting = self._replies.get(delivery.request_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(delivery.body)

    def _route_one(self, sub_id: str, delivery: Delivery | SharedDelivery) -> None:
        route = self._routes.get(sub_id)
        if route is None:
            return  # unsubscribed meanwhile
        if route.orders is None:
            if route.early is None:
                route.early = []
            route.early.append(delivery if isinstance(delivery, Delivery) else delivery.one(sub_id))
            return
        order = route.orders.get(delivery.group)
        if order is None:
            LOG.error("Delivery for a group subscription %r is not in: %r", sub_id, delivery)
            return
        if self._tails is not None:
            self._received[delivery.group] = self._received.get(delivery.group, 0) + 1
        try:
            released = order.push(delivery.epoch, delivery.offset, delivery)
        except EpochChanged:
            self._lose(sub_id, delivery.group, "its group's stream was restarted")
            return
        if not released and delivery.offset <= order.last:
            self.duplicates += 1
            metrics.duplicate_dropped()
        elif not released:
            metrics.reorder_wait()  # buffered until the missing offset comes
        for item in released:
            self._hand(route, sub_id, item)
        if order.waiting:
            self._schedule_gap_check(sub_id, delivery.group, order.last)

    def _hand(self, route: _Route, sub_id: str, delivery: Delivery | SharedDelivery) -> None:
        try:
            route.target(delivery)
        except Exception:
            LOG.exception("Delivering to subscription %r failed", sub_id)

    def _lose(self, sub_id: str, group: str, why: str) -> None:
        """End a subscription whose notifications can no longer all be delivered."""
        route = self._routes.pop(sub_id, None)
        if route is None:
            return
        LOG.warning("Subscription %r lost notifications of %r: %s", sub_id, group, why)
        self._hand(route, sub_id, Delivery(sub_id, group, "", 0, DeliveryKind.LOST, why))
        self._loop.create_task(self.fabric.unregister(self.edge_id, sub_id))

    # ---- Gaps ----------------------------------------------------------------------

    def _schedule_gap_check(
        self, sub_id: str, group: str, last: int, *, force: bool = False
    ) -> None:
        route = self._routes[sub_id]
        if route.gap_checks is None:
            route.gap_checks = {}
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
        if route.gap_checks is None:
            route.gap_checks = {}
        _, attempts = route.gap_checks.get(group, (last, 0))
        route.gap_checks[group] = (last, attempts + 1)
        missing = order.missing() or list(range(order.last + 1, order.behind + 1))
        self._request_repair(sub_id, group, order.epoch, missing)
        # Under load the recomputation waits its turn behind other work: ask
        # again, less and less often, for as long as history holds the events
        # (only HistoryLost ends the subscription).
        delay = min(self.gap_wait * 2 ** (attempts + 1), _GAP_RETRY_CAP)
        self._loop.call_later(delay, self._check_gap, sub_id, group, last)

    def _request_repair(self, sub_id: str, group: str, epoch: str, offsets: list[int]) -> None:
        """Have ``offsets`` of ``group`` recomputed for ``sub_id``, batched with its peers.

        An offset asked for less than ``_REPAIR_RETRY`` seconds ago is not
        asked again: under load its repair waits in the workers' queue, and
        every retry would queue one more (a worker killed mid-burst once
        left ~3,000 repairs queued ahead of the clients' operations). After
        that long, the request is presumed lost with its worker.
        """
        route = self._routes.get(sub_id)
        if route is None or not offsets:
            return
        now = self._loop.time()
        if route.requested is None:
            route.requested = {}
        asked = route.requested.setdefault(group, {})
        order = route.orders.get(group) if route.orders else None
        if order is not None:
            for done in [o for o in asked if o <= order.last]:
                del asked[done]
        offsets = [o for o in offsets if now - asked.get(o, -_REPAIR_RETRY) >= _REPAIR_RETRY]
        if not offsets:
            return
        for offset in offsets:
            asked[offset] = now
        self._repairs.setdefault((group, epoch, tuple(offsets)), []).append(sub_id)
        if self._repairs_due is None:
            self._repairs_due = self._loop.call_later(_REPAIR_BATCH_WAIT, self._send_repairs)

    def _send_repairs(self) -> None:
        self._repairs_due = None
        repairs, self._repairs = self._repairs, {}
        for (group, epoch, offsets), sub_ids in repairs.items():
            task = self._loop.create_task(self._repair(group, epoch, list(offsets), sub_ids))
            self._repairing.add(task)
            task.add_done_callback(self._repairing.discard)
            task.add_done_callback(_log_repair_failure)

    async def _repair(self, group: str, epoch: str, offsets: list[int], sub_ids: list[str]) -> None:
        members = [
            (sub_id, _data(route))
            for sub_id in dict.fromkeys(sub_ids)
            if (route := self._routes.get(sub_id)) is not None
        ]
        if not members:
            return
        try:
            # Streams are trimmed from the front: if the first offset is
            # still there, so are the others.
            await asyncio.to_thread(self.fabric.event_at, group, epoch, min(offsets))
        except HistoryTrimmed as error:
            sub_ids = [sub_id for sub_id, _ in members]
            self._loop.call_later(
                self.trimmed_gap_wait,
                self._lose_if_missing,
                sub_ids,
                group,
                epoch,
                min(offsets),
                str(error),
            )
            return
        except HistoryLost as error:
            for sub_id, _ in members:
                self._lose(sub_id, group, str(error))
            return
        except Exception:
            LOG.exception("Looking up a gap of %r in history failed; will retry", group)
            return
        distributed = runtime.settings().distributed
        for window, chunk in _repair_tasks(offsets, members, runtime.settings().FANOUT_CHUNK_SIZE):
            args = (self.edge_id, group, epoch, window, chunk)
            if distributed:
                await asyncio.to_thread(runtime.renotify, *args)
            else:
                runtime.renotify(*args)

    def _lose_if_missing(
        self, sub_ids: list[str], group: str, epoch: str, offset: int, why: str
    ) -> None:
        """End as lost each of the subscriptions ``offset`` has still not reached."""
        for sub_id in sub_ids:
            route = self._routes.get(sub_id)
            order = route.orders.get(group) if route is not None and route.orders else None
            if order is not None and order.epoch == epoch and order.last < offset:
                self._lose(sub_id, group, why)

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
        received: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.gap_wait * 4)
            # A group that received deliveries during the round has a fan-out
            # under way (late, under load, is not lost): its tails wait.
            busy = {g for g, n in self._received.items() if received.get(g) != n}
            received = dict(self._received)
            groups = {g for route in self._routes.values() for g in route.groups}
            self._received = {g: n for g, n in self._received.items() if g in groups}
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
                    if group in busy:
                        continue
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
                    self.edge_id, sub_id, route.groups, _data(route)
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
                        sub_id,
                        Delivery(
                            sub_id,
                            group,
                            position.epoch,
                            position.offset,
                            DeliveryKind.RESYNC,
                            "the group's stream was restarted",
                        ),
                    )
