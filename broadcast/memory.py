"""``InMemoryFabric``: the fabric inside one process (embedded mode).

Everything lives in dicts behind one lock: per group, the epoch, the last
offset, a bounded history and the registered subscribers; per edge, its
sink. ``issue`` and ``register`` each take the lock once, which is what
makes "registered before offset N" exact: a subscriber registered while an
event is being issued is either before it (and receives it) or after it
(and does not), never half of each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .fabric import (
    Deliverable,
    EdgeStats,
    Event,
    EventKind,
    Fabric,
    HistoryLost,
    HistoryTrimmed,
    Position,
    Reply,
    Sink,
    Subscriber,
)

__all__ = ["InMemoryFabric"]


@dataclass
class _Group:
    epoch: str
    last: int = 0
    history: deque[Event] = field(default_factory=deque)
    #: sub_id -> subscriber, in registration order.
    subscribers: dict[str, Subscriber] = field(default_factory=dict)


class InMemoryFabric(Fabric):
    """The fabric of one process. Thread-safe."""

    def __init__(self, history_limit: int = 1000, idempotency_limit: int = 10_000) -> None:
        self.history_limit = history_limit
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._sinks: dict[str, Sink] = {}
        self._stats: dict[str, EdgeStats] = {}
        #: edge_id -> {sub_id: groups}, to unregister without scanning groups.
        self._edges: dict[str, dict[str, tuple[str, ...]]] = {}
        self._issued: OrderedDict[str, Event] = OrderedDict()
        self._idempotency_limit = idempotency_limit

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(epoch=uuid.uuid4().hex)
        return group

    # ---- Broadcaster and fan-out side --------------------------------------

    def issue(
        self, group: str, kind: EventKind, payload: bytes, *, key: str | None = None
    ) -> Event:
        with self._lock:
            if key is not None and key in self._issued:
                return self._issued[key]
            state = self._group(group)
            state.last += 1
            event = Event(group, state.epoch, state.last, EventKind(kind), payload, time.time())
            state.history.append(event)
            while len(state.history) > self.history_limit:
                state.history.popleft()
            if key is not None:
                self._issued[key] = event
                while len(self._issued) > self._idempotency_limit:
                    self._issued.popitem(last=False)
            return event

    def still_registered(self, edge_id: str, sub_ids: Sequence[str]) -> set[str]:
        with self._lock:
            registered = self._edges.get(edge_id, {})
            return {sub_id for sub_id in sub_ids if sub_id in registered}

    def _before(self, group: str, before: int) -> list[Subscriber]:
        with self._lock:
            state = self._groups.get(group)
            found = [] if state is None else list(state.subscribers.values())
        return [s for s in found if s.positions[group].offset < before]

    def subscribers(
        self, group: str, before: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Subscriber]:
        return iter(self._before(group, before)[start:stop])

    def subscriber_count(self, group: str, before: int) -> int:
        return len(self._before(group, before))

    def deliver(self, edge_id: str, deliveries: Sequence[Deliverable]) -> None:
        sink = self._sinks.get(edge_id)
        if sink is not None and deliveries:
            sink(deliveries)

    def reply(self, edge_id: str, request_id: str, body: bytes) -> None:
        sink = self._sinks.get(edge_id)
        if sink is not None:
            sink([Reply(request_id, body)])

    def history(self, group: str, after: int, epoch: str) -> list[Event]:
        with self._lock:
            state = self._groups.get(group)
            if state is None or state.epoch != epoch:
                raise HistoryLost(f"Group {group!r} has a new epoch")
            events = [event for event in state.history if event.offset > after]
        first = events[0].offset if events else state.last + 1
        if first != after + 1:
            raise HistoryTrimmed(f"Group {group!r} no longer holds offset {after + 1}")
        return events

    def positions(self, groups: Sequence[str]) -> dict[str, Position]:
        with self._lock:
            return {
                name: Position(self._groups[name].epoch, self._groups[name].last)
                for name in groups
                if name in self._groups
            }

    # ---- Edge side ----------------------------------------------------------

    async def register(
        self, edge_id: str, sub_id: str, groups: Sequence[str], data: Any
    ) -> dict[str, Position]:
        names = tuple(dict.fromkeys(groups))
        with self._lock:
            positions = {}
            for name in names:
                state = self._group(name)
                positions[name] = Position(state.epoch, state.last)
            subscriber = Subscriber(edge_id, sub_id, positions, data)
            for name in names:
                self._groups[name].subscribers[sub_id] = subscriber
            self._edges.setdefault(edge_id, {})[sub_id] = names
        return positions

    async def unregister(self, edge_id: str, sub_id: str) -> None:
        with self._lock:
            self._forget(edge_id, sub_id)

    def _forget(self, edge_id: str, sub_id: str) -> None:
        names = self._edges.get(edge_id, {}).pop(sub_id, ())
        for name in names:
            state = self._groups.get(name)
            if state is not None:
                state.subscribers.pop(sub_id, None)

    def attach_edge(
        self,
        edge_id: str,
        sink: Sink,
        *,
        on_lost: Callable[[], None] | None = None,
        stats: EdgeStats | None = None,
    ) -> None:
        # Memory is never lost while the process lives: on_lost is never called.
        with self._lock:
            self._sinks[edge_id] = sink
            self._edges.setdefault(edge_id, {})
            if stats is not None:
                self._stats[edge_id] = stats

    def detach_edge(self, edge_id: str) -> None:
        with self._lock:
            self._sinks.pop(edge_id, None)
            self._stats.pop(edge_id, None)
            for sub_id in list(self._edges.get(edge_id, {})):
                self._forget(edge_id, sub_id)
            self._edges.pop(edge_id, None)

    # ---- Introspection (tests, status) --------------------------------------

    def edge_stats(self) -> dict[str, dict[str, str | int | float | bool]]:
        """What each attached edge says about itself (its ``stats``), by edge id."""
        with self._lock:
            sources = dict(self._stats)
        return {edge_id: dict(stats()) for edge_id, stats in sources.items()}

    def registered(self, group: str | None = None) -> int:
        """Subscriptions registered in ``group``, or in all groups."""
        with self._lock:
            if group is not None:
                state = self._groups.get(group)
                return 0 if state is None else len(state.subscribers)
            return sum(len(subs) for subs in self._edges.values())
