"""From one event to the deliveries of its subscribers: cohorts, one render each.

Both fan-outs (embedded in thread pools, distributed on Celery workers) go
through ``deliveries_for``. Subscribers are first grouped into *cohorts*:
the same consumer, document, variables and cohort key, declared by the
Subscription class as sure to receive the same notification. Each cohort
runs ``publish`` and renders once; the payload is JSON-encoded once, with
its stream position (``extensions.gqlws``) already in it, so the edge only
splices the operation id around it. A subscriber with no cohort key is a
cohort of its own, which is the reference library's behaviour.

Every subscriber gets exactly one delivery per event: a result, a skip, or
an error result if computing it failed. A missing delivery would hold back
every later notification of that subscription.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from graphql import ExecutionResult

from broadcast import (
    Deliverable,
    Delivery,
    DeliveryKind,
    Event,
    EventKind,
    SharedDelivery,
    Subscriber,
)

from . import metrics
from .execution import format_result
from .phases import PublishPhase
from .protocol.base import encode
from .serializer import deserialize, serialize

__all__ = ["cohort_signature", "deliveries_for", "encode_notification"]

LOG = logging.getLogger(__name__)

_INTERNAL_ERROR = {"message": "Internal server error"}

#: Runs the subscription document of one subscriber with a publish root.
Render = Callable[[PublishPhase], ExecutionResult]


def cohort_signature(
    consumer: str, query: str, operation_name: str | None, variables: Any, key: bytes | None
) -> str | None:
    """What subscribers of one cohort share; None for a subscriber on its own."""
    if key is None:
        return None
    shared = serialize([consumer, query, operation_name, json.dumps(variables, sort_keys=True)])
    return hashlib.blake2b(shared + b"\0" + key, digest_size=16).hexdigest()


def encode_notification(payload: dict[str, Any], event: Event) -> str:
    """The JSON text of a notification's payload, its stream position included."""
    extensions = dict(payload.get("extensions") or {})
    extensions["gqlws"] = {"group": event.group, "epoch": event.epoch, "offset": event.offset}
    return encode({**payload, "extensions": extensions})


def _render(event: Event, render: Render) -> tuple[DeliveryKind, str | None]:
    try:
        root = PublishPhase(deserialize(event.payload))
        result = render(root)
    except Exception:
        LOG.exception("Computing a notification of %r failed", event.group)
        return DeliveryKind.RESULT, encode_notification(
            {"data": None, "errors": [_INTERNAL_ERROR]}, event
        )
    if root.skipped and not result.errors:
        return DeliveryKind.SKIP, None
    return DeliveryKind.RESULT, encode_notification(format_result(result), event)


def deliveries_for(
    event: Event,
    subscribers: Iterable[Subscriber],
    renderer: Callable[[Subscriber], Render],
    cohort: Callable[[Subscriber], Hashable | None],
) -> dict[str, list[Deliverable]]:
    """Per edge, the deliveries of ``subscribers`` for ``event``, one render per cohort.

    A cohort's members on one edge share one ``SharedDelivery``.
    """
    cohorts: dict[Hashable, list[Subscriber]] = defaultdict(list)
    singles: list[Subscriber] = []
    for subscriber in subscribers:
        key = cohort(subscriber)
        (singles if key is None else cohorts[key]).append(subscriber)
    by_edge: dict[str, list[Deliverable]] = defaultdict(list)
    # Counted once per call, not per subscriber: a metric's update takes
    # locks, which the fan-out's threads would queue on (see
    # ``execution._middleware_manager``).
    computed: dict[str, int] = defaultdict(int)
    for members in [*cohorts.values(), *([single] for single in singles)]:
        try:
            if event.kind is EventKind.UNSUBSCRIBE:
                kind, body = DeliveryKind.END, None
            else:
                kind, body = _render(event, renderer(members[0]))
        except Exception:  # the renderer itself could not be built (bad data)
            LOG.exception("Preparing a notification of %r failed", event.group)
            body = encode_notification({"data": None, "errors": [_INTERNAL_ERROR]}, event)
            kind = DeliveryKind.RESULT
        computed[kind.value] += len(members)
        if len(members) == 1:
            (member,) = members
            by_edge[member.edge_id].append(
                Delivery(
                    member.sub_id,
                    event.group,
                    event.epoch,
                    event.offset,
                    kind,
                    body,
                    event.issued_at,
                )
            )
            continue
        # A cohort: one delivery per edge for all its members there.
        sub_ids: dict[str, list[str]] = defaultdict(list)
        for member in members:
            sub_ids[member.edge_id].append(member.sub_id)
        for edge_id, ids in sub_ids.items():
            by_edge[edge_id].append(
                SharedDelivery(
                    tuple(ids), event.group, event.epoch, event.offset, kind, body, event.issued_at
                )
            )
    for kind_value, count in computed.items():
        metrics.fanout_computed(kind_value, count)
    return by_edge
