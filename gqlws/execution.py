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

One exception: a query or mutation in which every field selected has an
``async def`` resolver (``PreparedOperation.async_only``) runs on the event
loop itself (``execute_on_loop``), when the consumer's middleware is async
too. No code of the user's that may block runs then, and the thread hop,
which costs more than the execution of a small query (a pool thread waking,
the GIL passed back and forth with the server's I/O, the loop woken), is
not paid. A field without a resolver of its own keeps the operation in the
pool: its default resolver may read a lazy model attribute.

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
import enum
import functools
import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import graphql
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    MiddlewareManager,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
    get_named_type,
    is_abstract_type,
    specified_rules,
)
from graphql.execution import ExecutionContext
from graphql.execution.execute import default_field_resolver, default_type_resolver
from graphql.execution.values import get_variable_values
from graphql.pyutils import Path, Undefined
from graphql.utilities import get_operation_ast

__all__ = [
    "DocumentCache",
    "InvalidDocument",
    "PreparedOperation",
    "coerce_variables",
    "coerced_variables",
    "document_cache",
    "execute",
    "execute_on_loop",
    "format_error",
    "format_result",
    "graphql_schema",
    "middleware_list",
    "run_on_loop",
    "runs_on_loop",
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
    #: A query or mutation whose every selected field has an ``async def``
    #: resolver: nothing in it may block, it can run on the event loop.
    async_only: bool = False
    #: The operation that runs and the document's fragments, found once.
    definition: OperationDefinitionNode | None = field(default=None, compare=False)
    fragments: dict[str, FragmentDefinitionNode] = field(default_factory=dict, compare=False)


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
        fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        prepared = PreparedOperation(
            document,
            operation.operation,
            operation_name,
            query,
            async_only=_async_only(self.schema, fragments, operation),
            definition=operation,
            fragments=fragments,
        )
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


def _async_only(
    schema: GraphQLSchema,
    fragments: dict[str, FragmentDefinitionNode],
    operation: OperationDefinitionNode,
) -> bool:
    """Whether every field ``operation`` may resolve has an ``async def`` resolver.

    ``fragments``: the document's fragment definitions, by name.

    Walked over concrete types: a field of an interface or union resolves with
    the resolver of the object type it turns out to be, so each possible type
    is checked. ``__typename`` needs no resolver; any other field without an
    async one (a default resolver, a sync one, introspection) answers no.
    """
    if operation.operation is OperationType.SUBSCRIPTION:
        return False
    root = schema.get_root_type(operation.operation)
    if root is None:
        return False
    checked: set[tuple[int, str]] = set()  # (selection set, type): fragments reused

    def applies(type_name: str | None, object_type: GraphQLObjectType) -> bool:
        if type_name is None or type_name == object_type.name:
            return True
        condition = schema.get_type(type_name)
        return is_abstract_type(condition) and schema.is_sub_type(condition, object_type)  # type: ignore[arg-type]

    def walk(selection_set: SelectionSetNode, object_type: GraphQLObjectType) -> bool:
        key = (id(selection_set), object_type.name)
        if key in checked:
            return True
        checked.add(key)
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name == "__typename":
                    continue
                field = object_type.fields.get(name)
                if field is None or not inspect.iscoroutinefunction(field.resolve):
                    return False
                if selection.selection_set is not None:
                    named = get_named_type(field.type)
                    targets = (
                        schema.get_possible_types(named)  # type: ignore[arg-type]
                        if is_abstract_type(named)
                        else [named]
                    )
                    for target in targets:
                        if not walk(selection.selection_set, target):  # type: ignore[arg-type]
                            return False
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if applies(condition.name.value if condition else None, object_type):
                    if not walk(selection.selection_set, object_type):
                        return False
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is None:
                    return False
                if applies(fragment.type_condition.name.value, object_type):
                    if not walk(fragment.selection_set, object_type):
                        return False
        return True

    return walk(operation.selection_set, root)


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


def _offload_sync_resolvers(next_: Callable[..., Any], root: Any, info: Any, **args: Any) -> Any:
    """Innermost middleware: keep sync resolvers off an event loop thread.

    Resolvers normally run in the executing thread, which has no running
    loop. Only an ``async`` middleware brings the chain onto the loop (its
    coroutine is awaited there); a sync resolver called from it then goes to
    a thread. The loop's default executor is used rather than the edge's
    bounded pool: the pool's thread that runs this operation is blocked
    waiting for that very coroutine, so a bounded pool could deadlock.
    """
    # Asked for every field: ``_get_running_loop`` answers None in a thread
    # without a loop (``get_running_loop`` would raise, which costs more).
    if asyncio._get_running_loop() is None or inspect.iscoroutinefunction(next_):
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
#: First of the objects that key a chain run on the loop: never a pool chain's key.
_ON_LOOP = object()


def _cached_manager(
    objects: tuple[Any, ...], build: Callable[[], MiddlewareManager]
) -> MiddlewareManager:
    """The middleware manager of a chain of ``objects`` (by identity), built once.

    graphql-core wraps each field's resolver in the chain and caches the
    wrapped resolver in the manager: a manager per execution would wrap
    every field anew each time (the bulk of the chain's cost).

    A hit takes no lock (a dict lookup is atomic). Every execution of every
    pool thread comes here, a fan-out once per subscriber: with a lock, a
    thread the GIL switched away from while holding it made all the others
    wait for it, about 2 ms per call, three quarters of the time of a
    per-subscriber fan-out (measured). Entries are few (one per loop and
    middleware list): the oldest goes first when there are too many.
    """
    key = tuple(map(id, objects))  # middleware need not be hashable; kept alive below
    entry = _managers.get(key)
    if entry is not None:
        return entry[0]
    manager = build()
    with _managers_lock:
        entry = _managers.setdefault(key, (manager, objects))
        while len(_managers) > 256:
            _managers.popitem(last=False)
    return entry[0]


def _middleware_manager(middleware: Sequence[Any], run_async: RunAsync) -> MiddlewareManager:
    """The middleware chain of a pool execution, built once per middleware and ``run_async``."""
    return _cached_manager(
        (run_async, *middleware),
        lambda: MiddlewareManager(_offload_sync_resolvers, *middleware, _AwaitOnLoop(run_async)),
    )


#: Whether an execution context can be built here from variables coerced
#: before: written against graphql-core 3.2's ``ExecutionContext`` and ``execute``.
_PREBUILT = graphql.version_info[:2] == (3, 2)
_IMMUTABLE = (str, int, float, bool, type(None), enum.Enum)


def coerce_variables(
    schema: GraphQLSchema, prepared: PreparedOperation, variables: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``variables`` coerced for ``prepared`` once, for ``execute`` to run it many times.

    A subscription runs its document at every notification with the same
    variables, and coercing them again each time was a tenth of a
    per-subscriber render (measured). None (coerce at each execution, as
    graphql-core does) when they do not coerce (the execution then says
    why), or when a coerced value is a list or an input object: a resolver
    receives it as its argument and could change it for the next execution.
    """
    if not _PREBUILT or prepared.definition is None:
        return None
    coerced = get_variable_values(
        schema, prepared.definition.variable_definitions or (), variables or {}, max_errors=50
    )
    if isinstance(coerced, list) or not all(
        isinstance(value, _IMMUTABLE) for value in coerced.values()
    ):
        return None
    return coerced


#: ``coerced_variables``' entries: (operation, (name, type, value) of each
#: variable) -> (the prepared operation, its coerced variables or None).
_coerced: OrderedDict[tuple[int, tuple[Any, ...]], tuple[PreparedOperation, Any]] = OrderedDict()
_coerced_lock = threading.Lock()


def coerced_variables(
    schema: GraphQLSchema, prepared: PreparedOperation, variables: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``coerce_variables``, remembered in this process for the same operation and variables.

    For a worker: it renders a subscription's notifications from its
    registration, decoded again for each event, so it cannot keep the
    coerced variables with the subscription as an edge does. The key holds
    each value's type (``1``, ``1.0`` and ``True`` are equal in a dict but
    coerce differently) and the prepared operation is compared by identity
    (an id can be reused once the document cache lets it go). Variables
    that are not hashable (lists, objects) are not remembered: None, as
    ``coerce_variables`` answers for them anyway.
    """
    try:
        values = tuple(
            sorted((name, type(value), value) for name, value in (variables or {}).items())
        )
        key = (id(prepared), values)
        entry = _coerced.get(key)  # no lock on a hit: a dict lookup is atomic
    except TypeError:
        return None
    if entry is not None and entry[0] is prepared:
        return entry[1]  # type: ignore[no-any-return]
    coerced = coerce_variables(schema, prepared, variables)
    with _coerced_lock:
        _coerced[key] = (prepared, coerced)
        while len(_coerced) > 4096:
            _coerced.popitem(last=False)
    return coerced


def _execute_document(
    schema: GraphQLSchema,
    prepared: PreparedOperation,
    variables: dict[str, Any] | None,
    context: Any,
    root_value: Any,
    middleware: MiddlewareManager | None,
    context_class: type[ExecutionContext] | None = None,
    coerced: dict[str, Any] | None = None,
) -> Any:
    """graphql-core's ``execute`` of a prepared document: a result, or an awaitable of one.

    With ``coerced`` (from ``coerce_variables``), the execution context is
    built here, without graphql-core's document scan and variable coercion.
    """
    if coerced is not None and prepared.definition is not None:
        built = (context_class or ExecutionContext)(
            schema,
            prepared.fragments,
            root_value,
            context,
            prepared.definition,
            dict(coerced),  # ``info.variable_values`` of this execution alone
            default_field_resolver,
            default_type_resolver,
            default_field_resolver,
            [],
            middleware,
            None,
        )
        return _executed(built, root_value)
    return graphql.execute(
        schema,
        prepared.document,
        root_value=root_value,
        context_value=context,
        variable_values=variables,
        operation_name=prepared.operation_name,
        middleware=middleware,
        execution_context_class=context_class,
    )


def _executed(context: ExecutionContext, root_value: Any) -> Any:
    """What graphql-core 3.2's ``execute`` does once its context is built, step for step."""
    errors = context.errors
    try:
        result = context.execute_operation(context.operation, root_value)
    except GraphQLError as error:
        errors.append(error)
        return context.build_response(None, errors)
    if context.is_awaitable(result):

        async def await_result() -> ExecutionResult:
            try:
                return context.build_response(await result, errors)  # type: ignore[misc]
            except GraphQLError as error:
                errors.append(error)
                return context.build_response(None, errors)

        return await_result()
    return context.build_response(result, errors)  # type: ignore[arg-type]


def execute(
    schema: GraphQLSchema,
    prepared: PreparedOperation,
    *,
    variables: dict[str, Any] | None,
    context: Any,
    middleware: Sequence[Any],
    run_async: RunAsync,
    root_value: Any = None,
    coerced: dict[str, Any] | None = None,
) -> ExecutionResult:
    """Run a prepared query or mutation in this thread and return its result.

    ``coerced``: ``variables`` as ``coerce_variables`` made them, if it did.
    Must not be called from an event loop thread: it blocks.
    """
    result = _execute_document(
        schema,
        prepared,
        variables,
        context,
        root_value,
        _middleware_manager(middleware, run_async),
        coerced=coerced,
    )
    if inspect.isawaitable(result):
        # Only reachable if a resolver escaped the middleware chain; keep the
        # contract (a value, never an awaitable) all the same.
        result = run_async(result)
    return result  # type: ignore[return-value]


def runs_on_loop(prepared: PreparedOperation, middleware: Sequence[Any]) -> bool:
    """Whether ``execute_on_loop`` may run ``prepared`` under ``middleware``.

    Every middleware must be async too: a sync one (a transaction around
    each field, say) may block.
    """
    return prepared.async_only and all(
        inspect.iscoroutinefunction(
            item if inspect.isfunction(item) else getattr(item, "resolve", None)
        )
        for item in middleware
    )


class _LoopExecutionContext(ExecutionContext):
    """graphql-core's, but a lone awaitable field is awaited, not gathered.

    ``asyncio.gather`` wraps even a single awaitable in a task of its own: two
    more turns of the event loop for every object whose fields resolve
    asynchronously, about a third of what a small query costs on the loop
    (measured). Several awaitable fields are still gathered, to run at once.
    """

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        fields: dict[str, list[FieldNode]],
    ) -> Any:
        results: dict[str, Any] = {}
        awaiting: list[str] = []
        for name, nodes in fields.items():
            result = self.execute_field(
                parent_type, source_value, nodes, Path(path, name, parent_type.name)
            )
            if result is not Undefined:
                results[name] = result
                if self.is_awaitable(result):
                    awaiting.append(name)
        if not awaiting:
            return results
        return _awaited(results, awaiting)


async def _awaited(results: dict[str, Any], awaiting: list[str]) -> dict[str, Any]:
    if len(awaiting) == 1:
        name = awaiting[0]
        results[name] = await results[name]
    else:
        values = await asyncio.gather(*(results[name] for name in awaiting))
        results.update(zip(awaiting, values, strict=True))
    return results


#: Only for the graphql-core whose ``execute_fields`` it was written against.
_LOOP_CONTEXT = _LoopExecutionContext if graphql.version_info[:2] == (3, 2) else ExecutionContext


async def execute_on_loop(
    schema: GraphQLSchema,
    prepared: PreparedOperation,
    *,
    variables: dict[str, Any] | None,
    context: Any,
    middleware: Sequence[Any],
    root_value: Any = None,
) -> ExecutionResult:
    """Run ``prepared`` on the running event loop (only if ``runs_on_loop``)."""
    # Workers run this from several threads, each on a loop of its own.
    manager = (
        _cached_manager((_ON_LOOP, *middleware), lambda: MiddlewareManager(*middleware))
        if middleware
        else None
    )
    result = _execute_document(
        schema, prepared, variables, context, root_value, manager, _LOOP_CONTEXT
    )
    if inspect.isawaitable(result):
        if prepared.operation_type is OperationType.MUTATION:
            # A stopped mutation runs to its end (its result is dropped), as
            # in the pool: it is not left half done. A stopped query is
            # cancelled: its resolvers stop at their next await.
            result = await asyncio.shield(result)
        else:
            result = await result
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
