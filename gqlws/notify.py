"""Embedded mode's fan-out: from an issued event to deliveries, in thread pools.

Once ``gqlws.runtime.issue`` has given an event its offset, ``dispatch``
runs in the thread pools of the subscribers' consumer classes, in
chunks, so that the ``publish`` callbacks of different notifications run
concurrently. Each subscriber's notification is computed by running its
subscription document with a ``PublishPhase`` root, and the results go to
the subscriber's edge in one ``deliver`` call per chunk. The edge puts them
back in order (``gqlws.edge``).

Every (subscriber, event) pair yields exactly one delivery, whatever
happens: a result, a skip, or an error result. A missing delivery would
hold back every later notification of that subscription.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSchema

from broadcast import Delivery, DeliveryKind, Event, EventKind, Subscriber, get_fabric

from .execution import PreparedOperation, RunAsync, execute, format_result
from .phases import PublishPhase
from .pool import submit
from .serializer import deserialize

__all__ = ["CHUNK_SIZE", "LocalSubscriber", "dispatch", "notification_for", "renotify"]

LOG = logging.getLogger(__name__)

#: Subscribers computed by one pool job; results are delivered per chunk.
CHUNK_SIZE = 64


@dataclass(frozen=True)
class LocalSubscriber:
    """What the fan-out needs of a subscription living in this process."""

    schema: GraphQLSchema
    prepared: PreparedOperation
    variables: dict[str, Any] | None
    context: Any
    middleware: list[Any]
    executor: ThreadPoolExecutor
    run_async: RunAsync


def dispatch(event: Event) -> None:
    """Fan ``event`` out in the pools of its subscribers' consumer classes."""
    by_executor: dict[ThreadPoolExecutor, list[Subscriber]] = defaultdict(list)
    for subscriber in get_fabric().subscribers(event.group, event.offset):
        by_executor[subscriber.data.executor].append(subscriber)
    for executor, subscribers in by_executor.items():
        for start in range(0, len(subscribers), CHUNK_SIZE):
            chunk = subscribers[start : start + CHUNK_SIZE]
            future = submit(executor, _run_chunk, event, chunk)
            future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        LOG.error("Fan-out job failed", exc_info=future.exception())


def _run_chunk(event: Event, chunk: Sequence[Subscriber]) -> None:
    by_edge: dict[str, list[Delivery]] = defaultdict(list)
    for subscriber in chunk:
        by_edge[subscriber.edge_id].append(notification_for(event, subscriber))
    fabric = get_fabric()
    for edge_id, deliveries in by_edge.items():
        fabric.deliver(edge_id, deliveries)


def renotify(
    edge_id: str, sub_id: str, data: LocalSubscriber, group: str, epoch: str, offsets: list[int]
) -> None:
    """Compute again, in the subscriber's pool, the notifications of ``offsets``."""

    def job() -> None:
        fabric = get_fabric()
        subscriber = Subscriber(edge_id, sub_id, {}, data)
        deliveries = [
            notification_for(fabric.event_at(group, epoch, offset), subscriber)
            for offset in offsets
        ]
        fabric.deliver(edge_id, deliveries)

    submit(data.executor, job).add_done_callback(_log_failure)


def notification_for(event: Event, subscriber: Subscriber) -> Delivery:
    """The one delivery ``subscriber`` gets for ``event``; never raises."""

    def delivery(kind: DeliveryKind, body: Any = None) -> Delivery:
        return Delivery(subscriber.sub_id, event.group, event.epoch, event.offset, kind, body)

    if event.kind is EventKind.UNSUBSCRIBE:
        return delivery(DeliveryKind.END)
    local: LocalSubscriber = subscriber.data
    try:
        root = PublishPhase(deserialize(event.payload))
        result = execute(
            local.schema,
            local.prepared,
            variables=local.variables,
            context=local.context,
            middleware=local.middleware,
            run_async=local.run_async,
            root_value=root,
        )
    except Exception:
        LOG.exception("Computing a notification of %r failed", event.group)
        return delivery(DeliveryKind.RESULT, {"data": None, "errors": [_INTERNAL_ERROR]})
    if root.skipped and not result.errors:
        return delivery(DeliveryKind.SKIP)
    return delivery(DeliveryKind.RESULT, format_result(result))


_INTERNAL_ERROR = {"message": "Internal server error"}
