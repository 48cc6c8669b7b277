"""The fabric's contract: ordered group events, the subscriber registry, edge deliveries.

The fabric carries bytes and positions; it knows nothing of GraphQL. Its
participants:

* a **broadcaster** (any thread or process) calls ``issue``: the event gets
  the next offset of its group, once and for all, before ``issue`` returns;
* a **fan-out** (a worker thread or process) reads ``subscribers`` of the
  group registered *before* that offset, computes what each receives, and
  hands the results to their edges with ``deliver``, in batches;
* an **edge** (the process owning WebSockets) ``register``\\s a subscription
  with the offsets current at registration (read in the same atomic step),
  receives its deliveries through the sink given to ``attach_edge``, and
  restores order with ``broadcast.ordering.InOrder``.

Positions are ``(epoch, offset)``: offsets grow by one per event of a
group; the epoch names the lifetime of a group's stream, so a stream that
was lost (a Redis restart) shows up as a new epoch instead of a silent gap.

Two backends implement this: ``InMemoryFabric`` (embedded mode, one
process) and the Redis backend (distributed mode).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Delivery",
    "DeliveryKind",
    "EdgeStats",
    "Event",
    "EventKind",
    "Fabric",
    "HistoryLost",
    "Position",
    "Reply",
    "Sink",
    "Subscriber",
]


class EventKind(str, enum.Enum):
    """What an event of a group asks of its subscribers."""

    PUBLISH = "publish"  # run publish with the payload, deliver the result
    UNSUBSCRIBE = "unsubscribe"  # end every subscription of the group, in order


class DeliveryKind(str, enum.Enum):
    """What an edge receives for one subscription at one offset."""

    RESULT = "result"  # a notification to send
    SKIP = "skip"  # publish suppressed it: advance silently
    END = "end"  # the server ended the subscription (group unsubscribe)
    # Raised by an edge itself, never sent by a fan-out:
    LOST = "lost"  # notifications are missing for good: end, the client must resync
    RESYNC = "resync"  # the group's stream restarted: say so, then go on from there


@dataclass(frozen=True, slots=True)
class Position:
    """Where a group's stream is: the epoch of the stream and the last offset in it."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class Event:
    """One event of a group, with its place in the group's order."""

    group: str
    epoch: str
    offset: int
    kind: EventKind
    payload: bytes
    #: Wall-clock time (``time.time()``) of the issue, when the backend keeps it:
    #: the start of the broadcast-to-socket latency. Metadata: not compared.
    issued_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A registered subscription as the fan-out sees it.

    ``data`` is opaque to the fabric: what the fan-out needs to compute the
    subscriber's notification (in embedded mode, live objects; in
    distributed mode, serialized bytes).
    """

    edge_id: str
    sub_id: str
    positions: Mapping[str, Position]
    data: Any


@dataclass(frozen=True)
class Delivery:
    """What one subscription gets for one event of one of its groups."""

    sub_id: str
    group: str
    epoch: str
    offset: int
    kind: DeliveryKind
    body: Any = None
    #: The ``issued_at`` of the event, carried to the edge for its latency metric.
    issued_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SharedDelivery:
    """The same delivery for several subscriptions of one edge (a cohort's).

    One object, and in a Redis stream one entry, for all of them: a fan-out
    to a thousand identical subscribers builds, packs and decodes one
    delivery, not a thousand copies of the same notification.
    """

    sub_ids: tuple[str, ...]
    group: str
    epoch: str
    offset: int
    kind: DeliveryKind
    body: Any = None
    issued_at: float | None = field(default=None, compare=False)

    def one(self, sub_id: str) -> Delivery:
        """The ``Delivery`` of one of its subscriptions."""
        return Delivery(
            sub_id, self.group, self.epoch, self.offset, self.kind, self.body, self.issued_at
        )


Deliverable = Delivery | SharedDelivery


@dataclass(frozen=True)
class Reply:
    """The answer to one request an edge sent to a worker (a query's result...)."""

    request_id: str
    body: bytes


Sink = Callable[[Sequence["Delivery | SharedDelivery | Reply"]], None]
"""Receives an edge's deliveries and replies; called from any thread, must not block."""


EdgeStats = Callable[[], Mapping[str, "str | int | float | bool"]]
"""What an edge says about itself (connections, subscriptions, pid...): called on its
loop at each heartbeat, published for ``manage.py gqlws status``; must be quick."""


class HistoryLost(LookupError):
    """The events asked for are no longer in the group's history (trimmed, or a new epoch)."""


class HistoryTrimmed(HistoryLost):
    """The events asked for were trimmed from the front of the group's history.

    The group's epoch lives on: a fan-out of those events may still be on its
    way (a burst issued faster than the workers fan out outruns the history).
    """


class Fabric(ABC):
    """The interface both backends implement. See the module docstring."""

    # ---- Broadcaster and fan-out side (sync: any thread, Celery workers) ----

    @abstractmethod
    def issue(
        self, group: str, kind: EventKind, payload: bytes, *, key: str | None = None
    ) -> Event:
        """Append an event to ``group``; returns it with its epoch and offset.

        ``key`` makes the call idempotent: issuing again with the same key
        returns the first event instead of appending another.
        """

    @abstractmethod
    def subscribers(
        self, group: str, before: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Subscriber]:
        """Subscribers of ``group`` registered before offset ``before`` was issued.

        In registration order; ``start``/``stop`` select a slice of that order
        (how a large group's fan-out is split into chunks).
        """

    @abstractmethod
    def subscriber_count(self, group: str, before: int) -> int:
        """How many ``subscribers(group, before)`` would yield."""

    def still_registered(self, edge_id: str, sub_ids: Sequence[str]) -> set[str]:
        """Which of ``sub_ids`` the edge still has registered (work for the others is moot).

        The default answers all of them: a fabric that cannot tell costs work, never loss.
        """
        return set(sub_ids)

    @abstractmethod
    def deliver(self, edge_id: str, deliveries: Sequence[Deliverable]) -> None:
        """Hand a batch of deliveries to an edge (dropped if the edge is gone)."""

    @abstractmethod
    def reply(self, edge_id: str, request_id: str, body: bytes) -> None:
        """Send the answer to request ``request_id`` to the edge that asked."""

    @abstractmethod
    def history(self, group: str, after: int, epoch: str) -> list[Event]:
        """Events of ``group`` after offset ``after``; raises ``HistoryLost``."""

    @abstractmethod
    def positions(self, groups: Sequence[str]) -> dict[str, Position]:
        """Where each group's stream is now (epoch and last offset); absent groups are left out."""

    def event_at(self, group: str, epoch: str, offset: int) -> Event:
        """The event at ``offset``; raises ``HistoryLost`` if it is gone."""
        events = self.history(group, offset - 1, epoch)
        if not events or events[0].offset != offset:
            raise HistoryTrimmed(f"Group {group!r} no longer holds offset {offset}")
        return events[0]

    # ---- Edge side ---------------------------------------------------------

    @abstractmethod
    async def register(
        self, edge_id: str, sub_id: str, groups: Sequence[str], data: Any
    ) -> dict[str, Position]:
        """Register a subscription; returns, per group, the position at registration."""

    @abstractmethod
    async def unregister(self, edge_id: str, sub_id: str) -> None:
        """Forget a subscription (no-op if unknown)."""

    @abstractmethod
    def attach_edge(
        self,
        edge_id: str,
        sink: Sink,
        *,
        on_lost: Callable[[], None] | None = None,
        stats: EdgeStats | None = None,
    ) -> None:
        """Route the deliveries of ``edge_id`` to ``sink`` from now on.

        ``on_lost`` is called when the fabric finds it lost the edge's
        registrations (its store restarted): the edge registers them again.
        ``stats`` is published with the edge's heartbeats, for operators.
        """

    @abstractmethod
    def detach_edge(self, edge_id: str) -> None:
        """Stop routing to ``edge_id`` and forget its subscriptions."""

    async def aclose_edge(self, edge_id: str) -> None:
        """``detach_edge`` from the edge's loop, returning once the edge is gone.

        A draining edge awaits this so that its registrations are gone
        before the process exits (a backend with background tasks per edge
        overrides it to wait for them).
        """
        self.detach_edge(edge_id)
