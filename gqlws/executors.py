"""Where an edge's operations run: its own thread pool, or the Celery workers.

Both executors take the same request (a phase, a prepared document,
variables and the operation's context) and give the same ``Outcome``: the
formatted result and, when subscribing, the groups. The consumer does not
know which one it has.

* ``EmbeddedExecutor`` runs ``gqlws.execution.execute`` in the consumer
  class's pool; ``info.context`` is the live scope.
* ``CeleryExecutor`` sends a ``gqlws.execute`` task carrying a snapshot of
  the scope, and waits for the reply on this edge's stream. The reply's
  context delta is merged into the live scope, so what a resolver stores
  persists for the connection, as in embedded mode.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphql import GraphQLError

from .context import OperationContext, apply_delta
from .edge import Edge
from .execution import (
    PreparedOperation,
    coerce_variables,
    execute,
    execute_on_loop,
    format_result,
    graphql_schema,
    middleware_list,
    run_on_loop,
    runs_on_loop,
)
from .notify import LocalSubscriber
from .phases import SubscribePhase, root_for
from .pool import run_in_pool
from .publishing import cohort_signature
from .remote import consumer_path, serialized_snapshot
from .serializer import deserialize, serialize

__all__ = ["CeleryExecutor", "EmbeddedExecutor", "Executor", "Outcome", "Phase"]

Phase = str  # "execute" | "subscribe" | "unsubscribed"


@dataclass
class Outcome:
    """What running one phase of an operation gave."""

    result: dict[str, Any]
    groups: list[str] = field(default_factory=list)
    is_subscription: bool = False
    #: The subscriber's cohort key (``Subscription.cohort``), None: on its own.
    cohort: bytes | None = None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.result.get("errors") or [])


class Executor(Protocol):
    async def run(
        self,
        consumer: Any,
        phase: Phase,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
    ) -> Outcome: ...

    def subscriber_data(
        self,
        consumer: Any,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
        cohort: bytes | None,
    ) -> Any: ...


class EmbeddedExecutor:
    """Runs phases in the consumer class's thread pool."""

    async def run(
        self,
        consumer: Any,
        phase: Phase,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
    ) -> Outcome:
        root = root_for(phase)
        middleware = middleware_list(consumer.middleware)
        if phase == "execute" and runs_on_loop(prepared, middleware):
            # Only async resolvers: nothing to keep off the loop, no thread hop.
            result = await execute_on_loop(
                graphql_schema(consumer.schema),
                prepared,
                variables=variables,
                context=context,
                middleware=middleware,
                root_value=root,
            )
            return Outcome(format_result(result))
        result = await run_in_pool(
            consumer._executor(),
            execute,
            graphql_schema(consumer.schema),
            prepared,
            variables=variables,
            context=context,
            middleware=middleware,
            run_async=run_on_loop(asyncio.get_running_loop()),
            root_value=root,
        )
        outcome = Outcome(format_result(result))
        if isinstance(root, SubscribePhase):
            outcome.groups = root.groups
            outcome.is_subscription = root.subscription is not None
            outcome.cohort = root.cohort
        return outcome

    def subscriber_data(
        self,
        consumer: Any,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
        cohort: bytes | None,
    ) -> Any:
        schema = graphql_schema(consumer.schema)
        return LocalSubscriber(
            schema,
            prepared,
            variables,
            context,
            # A tuple: without middleware, the shared empty one.
            tuple(middleware_list(consumer.middleware)),
            consumer._executor(),
            run_on_loop(asyncio.get_running_loop()),
            _signature(consumer, prepared, variables, cohort),
            coerce_variables(schema, prepared, variables),
        )


def _error(message: str) -> dict[str, Any]:
    return {"data": None, "errors": [GraphQLError(message).formatted]}


class CeleryExecutor:
    """Runs phases on the Celery workers; replies come back through the edge's stream."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def _request(
        self,
        consumer: Any,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
    ) -> dict[str, Any]:
        return {
            "consumer": consumer_path(consumer if isinstance(consumer, type) else type(consumer)),
            "query": prepared.query,
            "operation_name": prepared.operation_name,
            "variables": variables,
            "scope": serialized_snapshot(context.channels_scope),
            "op_id": context.graphql_operation_id,
        }

    async def run(
        self,
        consumer: Any,
        phase: Phase,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
    ) -> Outcome:
        from . import runtime

        edge = Edge.current()
        request_id = uuid.uuid4().hex
        request = self._request(consumer, prepared, variables, context)
        request.update(phase=phase, edge_id=edge.edge_id, request_id=request_id)
        reply = None if phase == "unsubscribed" else edge.expect_reply(request_id)
        try:
            await runtime.send_task_from_loop("gqlws.execute", (request,))
            if reply is None:
                return Outcome({"data": None})
            body = await asyncio.wait_for(reply, self.timeout)
        except asyncio.TimeoutError:
            return Outcome(
                _error(
                    f"The operation got no answer within {self.timeout:g} s "
                    "(the worker running it may have been lost); it ran at most once"
                )
            )
        finally:
            if reply is not None and not reply.done():
                reply.cancel()
        answer = deserialize(body)
        if "delta" in answer:
            _merge(context.channels_scope, deserialize(answer["delta"]))
        return Outcome(
            answer["result"],
            answer.get("groups") or [],
            answer.get("is_subscription", False),
            answer.get("cohort"),
        )

    def subscriber_data(
        self,
        consumer: Any,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: OperationContext,
        cohort: bytes | None,
    ) -> Any:
        request = self._request(consumer, prepared, variables, context)
        request["cohort"] = _signature(consumer, prepared, variables, cohort)
        return serialize(request)


def _signature(
    consumer: Any, prepared: PreparedOperation, variables: Any, cohort: bytes | None
) -> str | None:
    cls = consumer if isinstance(consumer, type) else type(consumer)
    signature = cohort_signature(
        consumer_path(cls), prepared.query, prepared.operation_name, variables, cohort
    )
    # Interned: every subscriber of a cohort holds the same string, not a copy each.
    return None if signature is None else sys.intern(signature)


def _merge(scope: Any, delta: tuple[dict[str, Any], list[str]]) -> None:
    """Apply a worker's context delta; a new session key reloads the scope's session."""
    changed, deleted = delta
    session_key = changed.pop("__session_key", None)
    changed.pop("__user_id", None)
    apply_delta(scope, (changed, deleted))
    session = scope.get("session")
    if session_key and getattr(session, "session_key", None) != session_key:
        from importlib import import_module

        from django.conf import settings

        engine = import_module(settings.SESSION_ENGINE)
        scope["session"] = engine.SessionStore(session_key=session_key)
