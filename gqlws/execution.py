"""Executing one GraphQL operation: document cache, resolver offloading, errors.

This is the only place that runs GraphQL. The edge consumer calls it in
embedded mode; a worker process calls the very same functions in
distributed mode. Two steps:

1. ``DocumentCache.prepare(query, operation_name)`` parses and validates a
   document once per schema and query text, and names the operation's type
   (query, mutation or subscription). Invalid documents raise
   ``InvalidDocument`` carrying spec-formatted errors; those are cached too,
   so a client repeating a broken query costs one dict lookup.
2. ``execute(...)`` runs it, synchronously, in the calling thread: a thread
   of the edge's pool in embedded mode, a Celery worker in distributed mode,
   never an event loop thread. Plain resolvers simply run there, so blocking
   code such as Django ORM queries, and the lazy loads that Django models do
   from default resolvers (``message.user.username``), never stall the loop
   and never meet Django's "cannot call this from an async context" guard.
   What comes back awaitable (``async def`` resolvers, async middleware) is
   handed to ``run_async``, which runs it on the edge's event loop and waits
   for it: async resolvers run on the loop, as they expect.

Rejected: running the executor on the loop and offloading each sync resolver
to a thread. It pays a thread hop per resolver and leaves every lazy model
attribute read by a default resolver on the loop thread, where Django
refuses database access.

Errors leave as the GraphQL spec formats them: ``message``, ``locations``,
``path`` and ``extensions``, each only when it has a value.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import graphql
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    MiddlewareManager,
    OperationType,
    ValidationRule,
    specified_rules,
)
from graphql.utilities import get_operation_ast

__all__ = [
    "DocumentCache",
    "InvalidDocument",
    "PreparedOperation",
    "document_cache",
    "execute",
    "format_error",
    "format_result",
    "graphql_schema",
    "middleware_list",
    "run_on_loop",
]


def graphql_schema(schema: Any) -> GraphQLSchema:
    """The graphql-core schema of a Graphene schema (or a graphql-core schema as is)."""
    if isinstance(schema, GraphQLSchema):
        return schema
    inner = getattr(schema, "graphql_schema", None)
    if isinstance(inner, GraphQLSchema):
        return inner
    raise TypeError(f"Expected a graphene.Schema or a GraphQLSchema, got {schema!r}")


def format_error(error: GraphQLError) -> dict[str, Any]:
    """One error as the GraphQL spec lays it out, without empty members."""
    formatted = dict(error.formatted)
    return {key: value for key, value in formatted.items() if value is not None}


def format_result(result: ExecutionResult) -> dict[str, Any]:
    """``{"data": ..., "errors": [...]}`` with ``errors`` only when there are some."""
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [format_error(error) for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return payload


class InvalidDocument(Exception):
    """The request cannot run: it does not parse, validate, or name one operation."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(error.get("message")) for error in errors))
        self.errors = errors


@dataclass(frozen=True)
class PreparedOperation:
    """A parsed, validated document and the operation in it that will run."""

    document: DocumentNode
    operation_type: OperationType
    operation_name: str | None
    #: The request's text, for workers that prepare it again in their process.
    query: str = ""


class DocumentCache:
    """Parsed and validated documents of one schema, least recently used first out.

    Thread-safe: workers prepare documents from several threads at once.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        maxsize: int = 1000,
        extra_rules: tuple[type[ValidationRule], ...] = (),
    ) -> None:
        self.schema = schema
        self.maxsize = maxsize
        self.rules = (*specified_rules, *extra_rules) if extra_rules else None
        self._entries: OrderedDict[str, DocumentNode | InvalidDocument] = OrderedDict()
        #: By (query, operation name): one ``PreparedOperation`` (and one copy
        #: of the query text) shared by every subscription of the same
        #: request, instead of one each for as long as it lives.
        self._prepared: OrderedDict[tuple[str, str | None], PreparedOperation] = OrderedDict()
        self._lock = threading.Lock()

    def document(self, query: str) -> DocumentNode:
        """The validated document for ``query``; raises ``InvalidDocument``."""
        with self._lock:
            entry = self._entries.get(query)
            if entry is not None:
                self._entries.move_to_end(query)
        if entry is None:
            entry = self._parse_and_validate(query)
            with self._lock:
                self._entries[query] = entry
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        if isinstance(entry, InvalidDocument):
            raise entry
        return entry

    def prepare(self, query: str, operation_name: str | None = None) -> PreparedOperation:
        """Document and operation type for a request; raises ``InvalidDocument``."""
        key = (query, operation_name)
        with self._lock:
            prepared = self._prepared.get(key)
            if prepared is not None:
                self._prepared.move_to_end(key)
                return prepared
        document = self.document(query)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                f"Unknown operation named '{operation_name}'."
                if operation_name
                else "Must provide operation name if query contains multiple operations."
            )
            raise InvalidDocument([{"message": message}])
        prepared = PreparedOperation(document, operation.operation, operation_name, query)
        with self._lock:
            prepared = self._prepared.setdefault(key, prepared)
            while len(self._prepared) > self.maxsize:
                self._prepared.popitem(last=False)
        return prepared

    def _parse_and_validate(self, query: str) -> DocumentNode | InvalidDocument:
        try:
            document = graphql.parse(query)
        except GraphQLError as error:
            return InvalidDocument([format_error(error)])
        errors = graphql.validate(self.schema, document, self.rules)
        if errors:
            return InvalidDocument([format_error(error) for error in errors])
        return document


_caches: dict[tuple[int, tuple[type[ValidationRule], ...]], DocumentCache] = {}
_caches_lock = threading.Lock()


def document_cache(
    schema: GraphQLSchema, extra_rules: tuple[type[ValidationRule], ...] = ()
) -> DocumentCache:
    """The process-wide document cache of ``schema`` validated with ``extra_rules``."""
    # Keyed by id() and holding the schema: schemas live as long as the
    # process (they are class attributes), so the cache never outlives one.
    key = (id(schema), extra_rules)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None or cache.schema is not schema:
            cache = _caches[key] = DocumentCache(schema, extra_rules=extra_rules)
        return cache


RunAsync = Callable[[Awaitable[Any]], Any]


def middleware_list(middleware: Any) -> list[Any]:
    """The consumer's ``middleware`` setting as a list (it may be a MiddlewareManager)."""
    if middleware is None:
        return []
    if isinstance(middleware, MiddlewareManager):
        return list(middleware.middlewares)
    if isinstance(middleware, Iterable) and not isinstance(middleware, (str, bytes)):
        return list(middleware)
    return [middleware]


def _in_event_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _offload_sync_resolvers(next_: Callable[..., Any], root: Any, info: Any, **args: Any) -> Any:
    """Innermost middleware: keep sync resolvers off an event loop thread.

    Resolvers normally run in the executing thread, which has no running
    loop. Only an ``async`` middleware brings the chain onto the loop (its
    coroutine is awaited there); a sync resolver called from it then goes to
    a thread. The loop's default executor is used rather than the edge's
    bounded pool: the pool's thread that runs this operation is blocked
    waiting for that very coroutine, so a bounded pool could deadlock.
    """
    if inspect.iscoroutinefunction(next_) or not _in_event_loop_thread():
        return next_(root, info, **args)
    call = functools.partial(contextvars.copy_context().run, next_, root, info, **args)
    return asyncio.get_running_loop().run_in_executor(None, call)


class _AwaitOnLoop:
    """Outermost middleware: turns awaitable results into values via ``run_async``."""

    def __init__(self, run_async: RunAsync) -> None:
        self.run_async = run_async

    def resolve(self, next_: Callable[..., Any], root: Any, info: Any, **args: Any) -> Any:
        result = next_(root, info, **args)
        if inspect.isawaitable(result):
            return self.run_async(result)
        return result


_managers: OrderedDict[tuple[int, ...], tuple[MiddlewareManager, tuple[Any, ...]]] = OrderedDict()
_managers_lock = threading.Lock()


def _middleware_manager(middleware: Sequence[Any], run_async: RunAsync) -> MiddlewareManager:
    """The middleware chain of an execution, built once per middleware and ``run_async``.

    graphql-core wraps each field's resolver in the chain and caches the
    wrapped resolver in the manager: a manager per execution would wrap
    every field anew each time (the bulk of the chain's cost).
    """
    objects = (run_async, *middleware)
    key = tuple(map(id, objects))  # middleware need not be hashable; kept alive below
    with _managers_lock:
        entry = _managers.get(key)
        if entry is not None:
            _managers.move_to_end(key)
            return entry[0]
    manager = MiddlewareManager(_offload_sync_resolvers, *middleware, _AwaitOnLoop(run_async))
    with _managers_lock:
        _managers[key] = (manager, objects)
        while len(_managers) > 256:
            _managers.popitem(last=False)
    return manager


def execute(
    schema: GraphQLSchema,
    prepared: PreparedOperation,
    *,
    variables: dict[str, Any] | None,
    context: Any,
    middleware: Sequence[Any],
    run_async: RunAsync,
    root_value: Any = None,
) -> ExecutionResult:
    """Run a prepared query or mutation in this thread and return its result.

    Must not be called from an event loop thread: it blocks.
    """
    result = graphql.execute(
        schema,
        prepared.document,
        root_value=root_value,
        context_value=context,
        variable_values=variables,
        operation_name=prepared.operation_name,
        middleware=_middleware_manager(middleware, run_async),
    )
    if inspect.isawaitable(result):
        # Only reachable if a resolver escaped the middleware chain; keep the
        # contract (a value, never an awaitable) all the same.
        result = run_async(result)
    return result  # type: ignore[return-value]


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunAsync] = (
    weakref.WeakKeyDictionary()
)


def run_on_loop(loop: asyncio.AbstractEventLoop) -> RunAsync:
    """A ``run_async`` that runs awaitables on ``loop`` (from another thread) and waits.

    One per loop, shared by every operation and subscription on it.
    """
    run_async = _runners.get(loop)
    if run_async is None:
        loop_ref = weakref.ref(loop)  # the cache must not keep the loop alive

        def run_async(awaitable: Awaitable[Any]) -> Any:
            target = loop_ref()
            if target is None:
                raise RuntimeError("The event loop of this operation is gone")
            return asyncio.run_coroutine_threadsafe(_await(awaitable), target).result()

        _runners[loop] = run_async
    return run_async
