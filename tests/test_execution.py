"""The document cache and the execution entry point, without a consumer."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import graphene
import pytest
from graphql import OperationType

from gqlws.execution import (
    DocumentCache,
    InvalidDocument,
    coerce_variables,
    execute,
    format_result,
    graphql_schema,
    run_on_loop,
)
from tests.schema import schema


def test_documents_are_parsed_and_validated_once_per_query_text() -> None:
    cache = DocumentCache(graphql_schema(schema))
    first = cache.document("{ hello }")
    assert cache.document("{ hello }") is first
    assert cache.prepare("{ hello }").operation_type is OperationType.QUERY
    assert cache.prepare('mutation { setContext(key: "a", value: "b") { ok } }').operation_type is (
        OperationType.MUTATION
    )


def test_invalid_documents_raise_spec_formatted_errors_and_are_cached_too() -> None:
    cache = DocumentCache(graphql_schema(schema))
    with pytest.raises(InvalidDocument) as first:
        cache.document("{ nope }")
    with pytest.raises(InvalidDocument) as second:
        cache.document("{ nope }")
    assert first.value is second.value
    assert first.value.errors == [
        {
            "message": "Cannot query field 'nope' on type 'Query'.",
            "locations": [{"line": 1, "column": 3}],
        }
    ]


def test_several_operations_need_an_existing_operation_name() -> None:
    cache = DocumentCache(graphql_schema(schema))
    with pytest.raises(InvalidDocument, match="Must provide operation name"):
        cache.prepare("query A { hello } query B { hello }")
    with pytest.raises(InvalidDocument, match="Unknown operation named 'C'"):
        cache.prepare("query A { hello } query B { hello }", "C")
    assert cache.prepare("query A { hello } query B { hello }", "B").operation_name == "B"


def test_the_cache_evicts_the_least_recently_used_document() -> None:
    cache = DocumentCache(graphql_schema(schema), maxsize=2)
    a = cache.document("{ a: hello }")
    cache.document("{ b: hello }")
    cache.document("{ a: hello }")
    cache.document("{ c: hello }")  # evicts b, the least recently used
    assert cache.document("{ a: hello }") is a
    assert len(cache._entries) == 2 and "{ b: hello }" not in cache._entries


def test_execute_runs_sync_resolvers_in_the_calling_thread_and_async_ones_on_the_loop() -> None:
    gql = graphql_schema(schema)
    prepared = DocumentCache(gql).prepare("{ threadName loopThreadName }")

    async def main() -> dict[str, object]:
        loop = asyncio.get_running_loop()

        def in_thread() -> object:
            return execute(
                gql,
                prepared,
                variables=None,
                context={},
                middleware=[],
                run_async=run_on_loop(loop),
            )

        result = await loop.run_in_executor(None, in_thread)
        return format_result(result)  # type: ignore[arg-type]

    payload = asyncio.run(main())
    data = payload["data"]
    assert isinstance(data, dict)
    assert data["loopThreadName"] == threading.main_thread().name
    assert data["threadName"] != threading.main_thread().name


def test_each_field_s_resolver_is_wrapped_in_the_middleware_once_not_per_execution() -> None:
    gql = graphql_schema(schema)
    prepared = DocumentCache(gql).prepare("{ threadName }")
    seen: list[str] = []

    def tracing(next_: Any, root: Any, info: Any, **args: Any) -> Any:
        seen.append(info.field_name)
        return next_(root, info, **args)

    wrapped: list[object] = []
    original = functools.partial

    def run() -> object:
        return execute(
            gql, prepared, variables=None, context={}, middleware=[tracing], run_async=run_async
        )

    async def main() -> None:
        nonlocal run_async
        run_async = run_on_loop(asyncio.get_running_loop())
        for _ in range(3):
            result = await asyncio.to_thread(run)
            assert format_result(result)["data"]["threadName"]  # type: ignore[arg-type,index]

    run_async: Any = None
    import graphql.execution.middleware as middleware_module

    def counting_partial(*args: Any, **kwargs: Any) -> Any:
        wrapped.append(args[0])
        return original(*args, **kwargs)

    middleware_module.partial = counting_partial  # type: ignore[assignment]
    try:
        asyncio.run(main())
    finally:
        middleware_module.partial = original  # type: ignore[assignment]
    assert seen == ["threadName"] * 3  # the middleware runs in every execution
    assert len(wrapped) == 3  # the chain of three was built for the field once


def test_the_same_request_prepared_twice_is_one_shared_prepared_operation() -> None:
    # Every subscription of one request holds it for as long as it lives.
    cache = DocumentCache(graphql_schema(schema))
    text = "query Named { hello }"
    first = cache.prepare(text, "Named")
    again = cache.prepare("".join(["query Named ", "{ hello }"]), "Named")  # equal, not the same
    assert again is first and again.query is first.query
    assert cache.prepare(text) is not first  # another operation name, another entry
    with pytest.raises(InvalidDocument):
        cache.prepare(text, "Unknown")


def _run(gql: Any, prepared: Any, variables: Any, coerced: Any = None) -> dict[str, Any]:
    async def main() -> Any:
        run_async = run_on_loop(asyncio.get_running_loop())
        return await asyncio.to_thread(
            execute,
            gql,
            prepared,
            variables=variables,
            context={},
            middleware=[],
            run_async=run_async,
            coerced=coerced,
        )

    return format_result(asyncio.run(main()))


def test_variables_coerced_once_run_many_executions_without_coercing_again(
    graphql_coercions: list[object],
) -> None:
    # A subscription's document runs at every notification with the same variables.
    gql = graphql_schema(schema)
    prepared = DocumentCache(gql).prepare("query($n: String) { hello(name: $n) fail }")
    coerced = coerce_variables(gql, prepared, {"n": "bob"})
    assert coerced == {"n": "bob"}
    results = [_run(gql, prepared, {"n": "bob"}, coerced) for _ in range(3)]
    assert graphql_coercions == []
    # The same result as graphql-core's own path, its errors included.
    assert results == [_run(gql, prepared, {"n": "bob"})] * 3
    assert len(graphql_coercions) == 1
    assert results[0]["data"] == {"hello": "Hello, bob!", "fail": None}
    assert results[0]["errors"][0]["path"] == ["fail"]


class _Changing(graphene.ObjectType):
    echo = graphene.String(text=graphene.String(), tags=graphene.List(graphene.String))

    @staticmethod
    def resolve_echo(root: Any, info: Any, text: str | None = None, tags: Any = None) -> str:
        answer = f"{text} {tags}"
        info.variable_values["t"] = "changed"  # what one execution does to its variables
        if tags is not None:
            tags.append("changed")
        return answer


def test_an_execution_s_variables_are_its_own() -> None:
    gql = graphql_schema(graphene.Schema(query=_Changing))
    cache = DocumentCache(gql)
    scalar = cache.prepare("query($t: String) { echo(text: $t) }")
    coerced = coerce_variables(gql, scalar, {"t": "a"})
    assert coerced == {"t": "a"}
    assert [_run(gql, scalar, {"t": "a"}, coerced) for _ in range(2)] == [
        {"data": {"echo": "a None"}}
    ] * 2
    # A list (or an input object) reaches a resolver as its argument, which
    # it may change: such variables are coerced for each execution.
    listed = cache.prepare("query($g: [String]) { echo(tags: $g) }")
    assert coerce_variables(gql, listed, {"g": ["x"]}) is None


def test_variables_that_do_not_coerce_are_left_to_the_execution_to_report() -> None:
    gql = graphql_schema(schema)
    cache = DocumentCache(gql)
    prepared = cache.prepare("query($s: Float!) { sleep(seconds: $s) }")
    assert coerce_variables(gql, prepared, {"s": "soon"}) is None
    assert coerce_variables(gql, prepared, {}) is None
    assert "errors" in _run(gql, prepared, {"s": "soon"})
