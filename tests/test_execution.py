"""The document cache and the execution entry point, without a consumer."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest
from graphql import OperationType

from gqlws.execution import (
    DocumentCache,
    InvalidDocument,
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
