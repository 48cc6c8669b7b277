"""Embedded mode's fan-out: from an issued event to deliveries, in thread pools.

Once ``gqlws.runtime.issue`` has given an event its offset, ``dispatch``
runs its fan-out in the thread pools of the subscribers' consumer classes:
each cohort (subscribers sure to get the same notification) in one job,
the others in chunks, so that ``publish`` callbacks of different
notifications run concurrently. Each job renders through
``gqlws.publishing`` and hands the results to the subscribers' edge in one
``deliver`` call; the edge puts them back in order (``gqlws.edge``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSchema

from broadcast import Event, Subscriber, get_fabric

from . import metrics
from .execution import PreparedOperation, RunAsync, execute
from .phases import PublishPhase
from .pool import submit
from .publishing import Render, deliveries_for

__all__ = ["CHUNK_SIZE", "LocalSubscriber", "dispatch", "renotify"]

LOG = logging.getLogger(__name__)

#: Subscribers (without a cohort) computed by one pool job.
CHUNK_SIZE = 64


@dataclass(frozen=True, slots=True)
class LocalSubscriber:
    """What the fan-out needs of a subscription living in this process (one per subscription)."""

    schema: GraphQLSchema
    prepared: PreparedOperation
    variables: dict[str, Any] | None
    context: Any
    middleware: Sequence[Any]
    executor: ThreadPoolExecutor
    run_async: RunAsync
    #: Subscribers with the same signature get the same notification.
    cohort: str | None = None
    #: ``variables`` coerced once (``execution.coerce_variables``), or None.
    coerced: dict[str, Any] | None = None


def _renderer(subscriber: Subscriber) -> Render:
    local: LocalSubscriber = subscriber.data

    def render(root: PublishPhase) -> Any:
        return execute(
            local.schema,
            local.prepared,
            variables=local.variables,
            context=local.context,
            middleware=local.middleware,
            run_async=local.run_async,
            root_value=root,
            coerced=local.coerced,
        )

    return render


def _cohort(subscriber: Subscriber) -> str | None:
    return subscriber.data.cohort


def dispatch(event: Event) -> None:
    """Fan ``event`` out in the pools of its subscribers' consumer classes."""
    cohorts: dict[tuple[ThreadPoolExecutor, str], list[Subscriber]] = defaultdict(list)
    singles: dict[ThreadPoolExecutor, list[Subscriber]] = defaultdict(list)
    for subscriber in get_fabric().subscribers(event.group, event.offset):
        local: LocalSubscriber = subscriber.data
        if local.cohort is None:
            singles[local.executor].append(subscriber)
        else:
            cohorts[(local.executor, local.cohort)].append(subscriber)
    for (executor, _), members in cohorts.items():
        submit(executor, _run, event, members).add_done_callback(_log_failure)
    for executor, subscribers in singles.items():
        for start in range(0, len(subscribers), CHUNK_SIZE):
            chunk = subscribers[start : start + CHUNK_SIZE]
            submit(executor, _run, event, chunk).add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        LOG.error("Fan-out job failed", exc_info=future.exception())


def _run(event: Event, subscribers: Sequence[Subscriber]) -> None:
    started = time.perf_counter()
    fabric = get_fabric()
    for edge_id, deliveries in deliveries_for(event, subscribers, _renderer, _cohort).items():
        fabric.deliver(edge_id, deliveries)
    metrics.fanout_done(started)


def renotify(
    edge_id: str, group: str, epoch: str, offsets: list[int], members: list[tuple[str, Any]]
) -> None:
    """Compute again, in the subscribers' pools, the notifications of ``offsets``."""
    by_pool: dict[ThreadPoolExecutor, list[Subscriber]] = defaultdict(list)
    for sub_id, local in members:
        by_pool[local.executor].append(Subscriber(edge_id, sub_id, {}, local))

    def job(subscribers: list[Subscriber]) -> None:
        fabric = get_fabric()
        for offset in offsets:
            event = fabric.event_at(group, epoch, offset)
            for edge, deliveries in deliveries_for(event, subscribers, _renderer, _cohort).items():
                fabric.deliver(edge, deliveries)

    for executor, subscribers in by_pool.items():
        submit(executor, job, subscribers).add_done_callback(_log_failure)
