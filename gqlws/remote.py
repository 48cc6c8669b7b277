"""Distributed mode, the worker's side: requests from edges, fan-out of events.

An edge sends a *request* (a Celery task) carrying everything a worker
needs and nothing live: the consumer class's dotted path (for the schema
and middleware), the query text, variables, operation name, the phase
(``execute``, ``subscribe``, ``unsubscribed``) and a snapshot of the
connection's scope. The worker imports the consumer class, prepares the
document with the same cache the edge uses, runs the same ``execute`` as
embedded mode, and sends the *reply* (result, groups, context delta)
through the edge's stream (``Fabric.reply``), never a Celery result
backend.

The context on a worker (Guarantee 6 of DESIGN.md) is a ``WorkerScope``:
the snapshot, with ``user`` and ``session`` loaded lazily from the user id
and session key, recording what resolvers change so the edge can apply the
delta to the live scope.

``fan_out`` computes one event's notifications: the subscribers registered
before its offset, in chunks; a chunk that is too big is split into more
tasks. Deliveries go to each edge's stream in one write per chunk.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from broadcast import Deliverable, Fabric, Subscriber

from . import metrics
from .context import OperationContext, TrackingDict
from .execution import (
    coerced_variables,
    document_cache,
    execute,
    execute_on_loop,
    format_error,
    format_result,
    graphql_schema,
    middleware_list,
    runs_on_loop,
)
from .phases import PublishPhase, SubscribePhase, root_for
from .pool import executor_for, submit
from .publishing import Render, deliveries_for
from .serializer import SerializationError, deserialize, serialize

__all__ = [
    "WorkerScope",
    "consumer_path",
    "fan_out",
    "renotify",
    "run_request",
    "serialized_snapshot",
    "snapshot_scope",
]

LOG = logging.getLogger(__name__)

#: Scope keys rebuilt on the worker rather than shipped.
_LIVE_KEYS = ("user", "session")


def consumer_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def import_consumer(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def snapshot_scope(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """What of a connection's scope travels to a worker.

    Every key whose value serializes, plus ``user_id`` and ``session_key``
    in place of the live ``user`` and ``session``. Keys that do not
    serialize are left out (Channels puts a few such objects there); the
    ones a resolver stored are checked on the way back, where an error
    names them.
    """
    snapshot: dict[str, Any] = {}
    for key, value in scope.items():
        if key in _LIVE_KEYS:
            continue
        try:
            serialize(value)
        except SerializationError:
            continue
        snapshot[key] = value
    snapshot.update(_identity(scope))
    return snapshot


def serialized_snapshot(scope: MutableMapping[str, Any]) -> bytes:
    """``serialize(snapshot_scope(scope))``, serializing the scope once when it can.

    A scope as ASGI servers and Channels make it serializes whole: trying
    that first spares a serialization of every value on its own (19 -> 7
    us per request, measured), which is left for a scope holding something
    that does not serialize.
    """
    whole = {key: value for key, value in scope.items() if key not in _LIVE_KEYS}
    whole.update(_identity(scope))
    try:
        return serialize(whole)
    except SerializationError:
        return serialize(snapshot_scope(scope))


def _identity(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The keys standing in for the live ``user`` and ``session``."""
    user = scope.get("user")
    is_authenticated = getattr(user, "is_authenticated", False)
    session = scope.get("session")
    return {
        "__user_id": getattr(user, "pk", None) if is_authenticated else None,
        "__session_key": getattr(session, "session_key", None),
    }


class WorkerScope(TrackingDict):
    """A scope snapshot on a worker: ``user`` and ``session`` load on first use."""

    def _load(self, key: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            value = self._loaded(key)
        else:
            # Asked by an async resolver, on this worker thread's private loop
            # (``run_async``): Django refuses database access from a thread
            # running a loop, so the load runs in a thread of its own. Blocking
            # here stalls only this request.
            value = submit(executor_for(WorkerScope, 4), self._loaded, key).result()
        dict.__setitem__(self, key, value)  # loaded, not changed: not in the delta
        return value

    def _loaded(self, key: str) -> Any:
        if key == "session":
            from importlib import import_module

            from django.conf import settings

            engine = import_module(settings.SESSION_ENGINE)
            value = engine.SessionStore(session_key=dict.get(self, "__session_key"))
        else:
            from django.contrib.auth import get_user_model
            from django.contrib.auth.models import AnonymousUser

            user_id = dict.get(self, "__user_id")
            model = get_user_model()
            value = AnonymousUser()
            if user_id is not None:
                value = model._default_manager.filter(pk=user_id).first() or value
        return value

    def __getitem__(self, key: str) -> Any:
        if key in _LIVE_KEYS and not dict.__contains__(self, key):
            return self._load(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in _LIVE_KEYS:
            return self[key]
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in _LIVE_KEYS or super().__contains__(key)

    def checked_delta(self) -> tuple[dict[str, Any], list[str]]:
        """The delta, with a clear error naming a key whose value cannot travel."""
        changed, deleted = self.delta()
        for key, value in changed.items():
            if key == "session":
                continue  # saved by the resolver (session.save()); the key travels below
            try:
                serialize(value)
            except SerializationError as error:
                raise SerializationError(
                    f"info.context.{key} holds a value that cannot be sent back to the "
                    f"connection: {error}"
                ) from None
        changed.pop("session", None)
        session = dict.get(self, "session")
        if session is not None and getattr(session, "session_key", None):
            changed["__session_key"] = session.session_key
        return changed, deleted


# ---- Running user code without an event loop of our own ----------------------

_loops = threading.local()


def run_async(awaitable: Any) -> Any:
    """Await on this worker thread's private event loop (async resolvers, callbacks)."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()

    async def _await() -> Any:
        return await awaitable

    return loop.run_until_complete(_await())


def _run_phase(
    consumer: Any,
    query: str,
    operation_name: str | None,
    variables: Any,
    scope: WorkerScope,
    op_id: str,
    root: Any,
) -> Any:
    schema = graphql_schema(consumer.schema)
    prepared = document_cache(schema).prepare(query, operation_name)
    middleware = middleware_list(consumer.middleware)
    context = OperationContext(scope, op_id, operation_name)
    if root is None and runs_on_loop(prepared, middleware):
        # A query or mutation of async resolvers only: all of it in one turn
        # of this thread's loop, its fields concurrent, as on an edge.
        return run_async(
            execute_on_loop(
                schema, prepared, variables=variables, context=context, middleware=middleware
            )
        )
    return execute(
        schema,
        prepared,
        variables=variables,
        context=context,
        middleware=middleware,
        run_async=run_async,
        root_value=root,
        # A notification: the same variables as the subscription's every other one.
        coerced=(
            coerced_variables(schema, prepared, variables)
            if isinstance(root, PublishPhase)
            else None
        ),
    )


def run_request(fabric: Fabric, request: dict[str, Any]) -> None:
    """Run one request from an edge and reply to it (unless it is ``unsubscribed``)."""
    phase = request["phase"]
    reply: dict[str, Any] = {}
    try:
        consumer = import_consumer(request["consumer"])
        scope = WorkerScope(deserialize(request["scope"]))
        root = root_for(phase)
        result = _run_phase(
            consumer,
            request["query"],
            request.get("operation_name"),
            request.get("variables"),
            scope,
            request["op_id"],
            root,
        )
        reply["result"] = format_result(result)
        if isinstance(root, SubscribePhase):
            reply["groups"] = root.groups
            reply["is_subscription"] = root.subscription is not None
            reply["cohort"] = root.cohort
        reply["delta"] = serialize(scope.checked_delta())
    except SerializationError as error:
        reply = {"result": {"data": None, "errors": [{"message": str(error)}]}}
    except Exception as error:
        LOG.exception("Request %s failed on the worker", request.get("request_id"))
        reply = {"result": {"data": None, "errors": [format_error(_as_graphql_error(error))]}}
    if phase != "unsubscribed":
        fabric.reply(request["edge_id"], request["request_id"], serialize(reply))


def _as_graphql_error(error: Exception) -> Any:
    from graphql import GraphQLError

    return GraphQLError("Internal server error", original_error=error)


# ---- Fan-out -------------------------------------------------------------------


def _renderer(subscriber: Subscriber) -> Render:
    data = _data(subscriber)
    consumer = import_consumer(data["consumer"])
    scope = WorkerScope(deserialize(data["scope"]))

    def render(root: PublishPhase) -> Any:
        return _run_phase(
            consumer,
            data["query"],
            data.get("operation_name"),
            data.get("variables"),
            scope,
            data["op_id"],
            root,
        )

    return render


def _data(subscriber: Subscriber) -> dict[str, Any]:
    """A subscriber's registration data, decoded once per fan-out."""
    data = subscriber.data
    if isinstance(data, bytes):
        data = deserialize(data)
    return data  # type: ignore[no-any-return]


def fan_out(
    fabric: Fabric,
    group: str,
    epoch: str,
    offset: int,
    *,
    chunk_size: int,
    start: int = 0,
    stop: int | None = None,
    split: Callable[[int, int], None] | None = None,
) -> int:
    """Compute and deliver the notifications of one event; returns how many.

    Without ``stop`` this is the event's first task: it reads the whole
    group, computes every cohort (one render each, whatever its size) and
    the first chunk of the other subscribers, and calls ``split(start,
    stop)`` for each further chunk. With ``stop`` it is such a chunk task:
    it computes the subscribers of its slice that belong to no cohort.
    """
    started = time.perf_counter()
    event = fabric.event_at(group, epoch, offset)
    if stop is None:
        everyone = [_decoded(s) for s in fabric.subscribers(group, offset)]
        chosen = [s for s in everyone if s.data.get("cohort") is not None]
        singles = [index for index, s in enumerate(everyone) if s.data.get("cohort") is None]
        if split is not None and len(singles) > chunk_size:
            for chunk_start in range(chunk_size, len(singles), chunk_size):
                chunk = singles[chunk_start : chunk_start + chunk_size]
                split(chunk[0], chunk[-1] + 1)
        chosen += [everyone[index] for index in singles[:chunk_size]]
    else:
        chosen = [
            s
            for s in map(_decoded, fabric.subscribers(group, offset, start, stop))
            if s.data.get("cohort") is None
        ]
    count = 0
    for edge_id, deliveries in deliveries_for(event, chosen, _renderer, _cohort).items():
        fabric.deliver(edge_id, deliveries)
        count += len(deliveries)
    metrics.fanout_done(started)
    return count


def _decoded(subscriber: Subscriber) -> Subscriber:
    data = _data(subscriber)
    return Subscriber(subscriber.edge_id, subscriber.sub_id, subscriber.positions, data)


def _cohort(subscriber: Subscriber) -> str | None:
    return _data(subscriber).get("cohort")


def renotify(
    fabric: Fabric,
    edge_id: str,
    group: str,
    epoch: str,
    offsets: list[int],
    members: list[tuple[str, bytes]],
) -> None:
    """Compute again the notifications of ``offsets`` for ``members`` of one edge.

    Members that left meanwhile (the client went away while the repair
    waited in the queue, a retry behind an earlier request) are skipped
    first: after a burst of gaps, the stale repairs of a thousand finished
    subscriptions cost a Redis round trip each instead of a render per
    offset, and no longer hold up the requests queued behind them.
    """
    present = fabric.still_registered(edge_id, [sub_id for sub_id, _ in members])
    subscribers = [
        _decoded(Subscriber(edge_id, sub_id, {}, data))
        for sub_id, data in members
        if sub_id in present
    ]
    redelivered: list[Deliverable] = []
    for offset in offsets:
        event = fabric.event_at(group, epoch, offset)
        for deliveries in deliveries_for(event, subscribers, _renderer, _cohort).values():
            redelivered += deliveries
    if redelivered:
        fabric.deliver(edge_id, redelivered)  # one stream entry for the whole repair
