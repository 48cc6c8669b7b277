"""Prometheus metrics of gqlws: every metric, defined once, and one-line recorders.

Call sites never touch ``prometheus_client`` themselves: they call the small
functions below (``metrics.connection_opened(subprotocol)``...), which keep
the label children of hot paths cached, so that recording costs a lock and
an addition, not a label lookup. What each metric counts and where:

=======================================  ==========================  ==========================
metric                                   labels                      recorded by
=======================================  ==========================  ==========================
``gqlws_connections_open``               subprotocol                 edge: accept ... disconnect
``gqlws_connections_total``              subprotocol                 edge: accept
``gqlws_connections_closed_total``       code, by (server/client)    edge: disconnect
``gqlws_operations_total``               type, outcome               edge: an operation's end
``gqlws_operation_duration_seconds``     type                        edge: start to result
``gqlws_subscriptions_active``           subscription                edge: live ... ended
``gqlws_notifications_total``            outcome                     edge: socket, SKIP, dropped
``gqlws_notification_latency_seconds``                               edge: issue to socket
``gqlws_queue_overflows_total``          policy                      edge: outbox full
``gqlws_resyncs_total``                  kind (lost/resync)          edge: client told to resync
``gqlws_edge_lag_seconds``                                           edge: age of the newest arrival
``gqlws_edge_pending_deliveries``                                    edge: arrived, not yet routed
``gqlws_reorder_waits_total``                                        edge: early offset buffered
``gqlws_duplicate_deliveries_total``                                 edge: repeated offset dropped
``gqlws_gap_fills_total``                                            edge: recomputation asked
``gqlws_fanout_duration_seconds``                                    fan-out: one chunk
``gqlws_fanout_chunks_total``                                        fan-out: chunks computed
``gqlws_fanout_deliveries_total``        kind (result/skip/end)      fan-out: deliveries computed
=======================================  ==========================  ==========================

Operation ``type`` is ``query``, ``mutation``, ``subscription`` or
``unknown`` (a document that did not validate); ``outcome`` is ``ok``,
``error`` (GraphQL errors in the result, or a refused subscribe),
``invalid``, ``failed`` (an internal error) or ``cancelled`` (stopped by
the client or the disconnect). A subscription's duration is the time to
make it live. Notification ``outcome`` is ``delivered`` (the frame went to
the socket), ``skipped`` (``publish`` returned SKIP) or ``dropped`` (a slow
client's queue lost it).

The latency runs from the event's issue (``Event.issued_at``, the
broadcaster's wall clock, stored with the event) to the frame handed to the
socket: across hosts it is as exact as their clocks agree (NTP).

Processes. An edge is one process (Daphne, uvicorn): it serves its own
metrics (``gqlws.ops``). Celery workers with the prefork pool are many
processes: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory in the
worker's environment *before it starts* (``prometheus_client`` reads it at
import), and every process writes its samples there; the exposition then
sums them (``MultiProcessCollector``), gauges as ``livesum`` (or ``livemax``
for the lag): only live processes count. The threads and solo pools need
nothing.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "connection_closed",
    "connection_opened",
    "deliveries_arrived",
    "deliveries_routed",
    "duplicate_dropped",
    "fanout_computed",
    "fanout_done",
    "gap_fill_requested",
    "notification_sent",
    "notification_skipped",
    "notifications_dropped",
    "observe_many",
    "operation_finished",
    "queue_overflowed",
    "registry",
    "reorder_wait",
    "resync",
    "subscription_ended",
    "subscription_name",
    "subscription_started",
]

#: Seconds: from a cached query on one host to a slow mutation behind a busy fleet.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# ---- Connections -----------------------------------------------------------------

CONNECTIONS_OPEN = Gauge(
    "gqlws_connections_open",
    "WebSocket connections open on this edge, by the subprotocol accepted",
    ["subprotocol"],
    multiprocess_mode="livesum",
)
CONNECTIONS = Counter(
    "gqlws_connections", "WebSocket connections accepted, by subprotocol", ["subprotocol"]
)
CLOSES = Counter(
    "gqlws_connections_closed",
    "WebSocket closes by close code, and by who closed (server: rejections included)",
    ["code", "by"],
)

# ---- Operations ------------------------------------------------------------------

OPERATIONS = Counter(
    "gqlws_operations", "Operations ended, by type and outcome", ["type", "outcome"]
)
OPERATION_SECONDS = Histogram(
    "gqlws_operation_duration_seconds",
    "Seconds from an operation's start to its result (a subscription: until it is live)",
    ["type"],
    buckets=_LATENCY_BUCKETS,
)
SUBSCRIPTIONS_ACTIVE = Gauge(
    "gqlws_subscriptions_active",
    "Live subscriptions on this edge, by Subscription class (module.QualName)",
    ["subscription"],
    multiprocess_mode="livesum",
)

# ---- Notifications, at the edge ----------------------------------------------------

NOTIFICATIONS = Counter(
    "gqlws_notifications",
    "Notifications of subscriptions: delivered to the socket, skipped by publish, or dropped",
    ["outcome"],
)
NOTIFICATION_LATENCY = Histogram(
    "gqlws_notification_latency_seconds",
    "Seconds from a broadcast's issue to its notification handed to the socket",
    buckets=_LATENCY_BUCKETS,
)
OVERFLOWS = Counter(
    "gqlws_queue_overflows",
    "Times a connection's notification queue overflowed, by overflow policy",
    ["policy"],
)
RESYNCS = Counter(
    "gqlws_resyncs",
    "Subscriptions told to resync: lost (ended) or resync (stream restarted, goes on)",
    ["kind"],
)
EDGE_LAG = Gauge(
    "gqlws_edge_lag_seconds",
    "Age of the newest delivery when it reached this edge (issue to arrival)",
    multiprocess_mode="livemax",
)
EDGE_PENDING = Gauge(
    "gqlws_edge_pending_deliveries",
    "Deliveries that reached this edge and wait for its event loop to route them "
    "(one shared by a cohort's subscriptions counts once)",
    multiprocess_mode="livesum",
)
REORDER_WAITS = Counter(
    "gqlws_reorder_waits", "Deliveries that arrived early and waited for an earlier offset"
)
DUPLICATES = Counter(
    "gqlws_duplicate_deliveries", "Deliveries dropped as repeats (a fan-out that ran twice)"
)
GAP_FILLS = Counter(
    "gqlws_gap_fills",
    "Subscriptions whose missing notifications were asked to be recomputed (gaps, resumes)",
)

# ---- Fan-out (workers, or the embedded pools) ----------------------------------------

FANOUT_SECONDS = Histogram(
    "gqlws_fanout_duration_seconds",
    "Seconds to compute and hand over the notifications of one fan-out chunk",
    buckets=_LATENCY_BUCKETS,
)
FANOUT_CHUNKS = Counter("gqlws_fanout_chunks", "Fan-out chunks (jobs or tasks) computed")
FANOUT_DELIVERIES = Counter(
    "gqlws_fanout_deliveries", "Deliveries computed by fan-outs and repairs, by kind", ["kind"]
)

# Label children of the hot paths, made once.
_DELIVERED = NOTIFICATIONS.labels("delivered")
_SKIPPED = NOTIFICATIONS.labels("skipped")
_DROPPED = NOTIFICATIONS.labels("dropped")


@functools.cache
def _operation(kind: str, outcome: str) -> tuple[Counter, Histogram]:
    return OPERATIONS.labels(kind, outcome), OPERATION_SECONDS.labels(kind)


@functools.cache
def _subscription(name: str) -> Gauge:
    return SUBSCRIPTIONS_ACTIVE.labels(name)


@functools.lru_cache(maxsize=64)
def _close(code: str, by: str) -> Counter:
    return CLOSES.labels(code, by)


# ---- Recorders -----------------------------------------------------------------------


def connection_opened(subprotocol: str | None) -> str:
    """A connection was accepted; returns its label, for ``connection_closed``."""
    label = subprotocol or "none"
    CONNECTIONS.labels(label).inc()
    CONNECTIONS_OPEN.labels(label).inc()
    return label


def connection_closed(label: str | None, ours: int | None, theirs: object) -> None:
    """A connection's disconnect: ``ours`` is the code the server closed with, if it did.

    ``label`` is what ``connection_opened`` returned (None: it never ran).
    Otherwise the client closed first, with ``theirs``: a client may pick
    any code from 3000 to 4999, so codes outside the ranges the protocols
    define are counted as "other" (one label per code a client invents
    would grow the metric without bound).
    """
    if label is not None:
        CONNECTIONS_OPEN.labels(label).dec()
    if ours is not None:
        _close(str(int(ours)), "server").inc()
        return
    known = type(theirs) is int and (1000 <= theirs <= 1015 or 4400 <= theirs <= 4500)
    _close(str(theirs) if known else "other", "client").inc()


def operation_finished(kind: str, outcome: str, started: float) -> None:
    """An operation ended; ``started`` is its ``time.perf_counter()`` at the start."""
    counter, histogram = _operation(kind, outcome)
    counter.inc()
    histogram.observe(time.perf_counter() - started)


def subscription_name(groups: Sequence[str]) -> str:
    """The Subscription class of a subscription, from its groups (``module.QualName/group``).

    Interned: every live subscription of a class holds the same string.
    """
    return sys.intern(str(groups[0].partition("/")[0])) if groups else "unknown"


def subscription_started(name: str) -> None:
    _subscription(name).inc()


def subscription_ended(name: str) -> None:
    _subscription(name).dec()


class _Sent(threading.local):
    """Notifications handed to sockets by this thread's loop in the current loop turn."""

    def __init__(self) -> None:
        self.count = 0
        self.latencies: list[float] = []


_sent = _Sent()


def notification_sent(issued_at: float | None) -> None:
    """A notification frame was handed to the socket.

    Recorded once per loop turn: a broadcast hands a thousand frames to
    sockets in one turn, and recording each cost three locks (the counter,
    the histogram's bucket and sum), a tenth of the edge's time in a fan-out.
    The turn's notifications are added together at the loop's next turn.
    """
    sent = _sent
    sent.count += 1
    if issued_at is not None:
        sent.latencies.append(time.time() - issued_at)
    if sent.count == 1:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop on this thread: nothing to wait for
            _record_sent()
        else:
            loop.call_soon(_record_sent)


def _record_sent() -> None:
    sent = _sent
    count, latencies = sent.count, sent.latencies
    sent.count, sent.latencies = 0, []
    if count:
        _DELIVERED.inc(count)
    observe_many(NOTIFICATION_LATENCY, latencies)


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """``histogram.observe(max(0, v))`` for each value, with one lock per bucket touched.

    Uses the histogram's own bucket and sum values (``prometheus_client``
    keeps them as ``_buckets``, ``_upper_bounds`` and ``_sum``); where a
    version lacks them, observes each value.
    """
    values = [value if value > 0.0 else 0.0 for value in values]
    if not values:
        return
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for value in values:
            histogram.observe(value)
        return
    for index, count in collections.Counter(bisect_left(bounds, v) for v in values).items():
        buckets[index].inc(count)
    total.inc(sum(values))


def notification_skipped() -> None:
    _SKIPPED.inc()


def notifications_dropped(count: int = 1) -> None:
    if count:
        _DROPPED.inc(count)


def queue_overflowed(policy: str) -> None:
    OVERFLOWS.labels(policy).inc()


def resync(kind: str) -> None:
    """A subscription was told to resync: "lost" (it ended) or "resync" (it goes on)."""
    RESYNCS.labels(kind).inc()


def deliveries_arrived(deliveries: Sequence[object]) -> None:
    """A batch reached the edge (any thread): pending up, lag from its newest delivery."""
    EDGE_PENDING.inc(len(deliveries))
    issued_at = getattr(deliveries[-1], "issued_at", None) if deliveries else None
    if issued_at is not None:
        EDGE_LAG.set(max(0.0, time.time() - issued_at))


def deliveries_routed(count: int) -> None:
    """The edge's loop routed a batch ``deliveries_arrived`` counted."""
    EDGE_PENDING.dec(count)


def reorder_wait() -> None:
    REORDER_WAITS.inc()


def duplicate_dropped() -> None:
    DUPLICATES.inc()


def gap_fill_requested(subscriptions: int) -> None:
    GAP_FILLS.inc(subscriptions)


def fanout_computed(kind: str, count: int) -> None:
    """``count`` deliveries of ``kind`` (result, skip, end) were computed."""
    FANOUT_DELIVERIES.labels(kind).inc(count)


def fanout_done(started: float) -> None:
    """One fan-out chunk is done; ``started`` is its ``time.perf_counter()`` at the start."""
    FANOUT_CHUNKS.inc()
    FANOUT_SECONDS.observe(time.perf_counter() - started)


# ---- Exposition ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def registry() -> CollectorRegistry:
    """What to expose: this process's metrics, or every process's with a multiprocess dir.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, a registry of its own holding only
    the ``MultiProcessCollector`` (the default registry would add this
    process's samples a second time).
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected
