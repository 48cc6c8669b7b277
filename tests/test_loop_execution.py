"""Queries and mutations of async resolvers only run on the event loop, not in the pool."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import graphene
import pytest

from gqlws.execution import document_cache, graphql_schema, runs_on_loop
from gqlws.testing import GraphqlWsTransport
from tests import schema as test_schema
from tests.conftest import Connect
from tests.test_consumer import Conn


class Named(graphene.Interface):
    name = graphene.String()


class AsyncNamed(graphene.ObjectType):
    class Meta:
        interfaces = (Named,)

    @staticmethod
    async def resolve_name(root: Any, info: Any) -> str:
        return "async"


class SyncNamed(graphene.ObjectType):
    class Meta:
        interfaces = (Named,)

    @staticmethod
    def resolve_name(root: Any, info: Any) -> str:
        return "sync"


class Pair(graphene.ObjectType):
    left = graphene.String()  # no resolver of its own: the default one

    @staticmethod
    async def resolve_left(root: Any, info: Any) -> str:
        return "left"


class Plain(graphene.ObjectType):
    value = graphene.String()  # default resolver


class Query(graphene.ObjectType):
    named = graphene.Field(Named)
    pair = graphene.Field(Pair)
    plain = graphene.Field(Plain)
    greeting = graphene.String()

    @staticmethod
    async def resolve_named(root: Any, info: Any) -> AsyncNamed:
        return AsyncNamed()

    @staticmethod
    async def resolve_pair(root: Any, info: Any) -> Pair:
        return Pair()

    @staticmethod
    async def resolve_plain(root: Any, info: Any) -> Plain:
        return Plain(value="v")

    @staticmethod
    async def resolve_greeting(root: Any, info: Any) -> str:
        return "hi"


class Touch(graphene.Mutation):
    ok = graphene.Boolean()

    @staticmethod
    async def mutate(root: Any, info: Any) -> Touch:
        return Touch(ok=True)


class Mutation(graphene.ObjectType):
    touch = Touch.Field()


class Subscription(graphene.ObjectType):
    ticks = graphene.Int()

    @staticmethod
    async def subscribe_ticks(root: Any, info: Any) -> Any:
        yield 1


SCHEMA = graphene.Schema(
    query=Query, mutation=Mutation, subscription=Subscription, types=[AsyncNamed, SyncNamed]
)


@pytest.mark.parametrize(
    ("query", "async_only"),
    [
        ("{ greeting }", True),
        ("{ __typename greeting }", True),
        ("{ pair { left } }", True),
        ("{ plain { value } }", False),  # a default resolver may read a lazy model attribute
        ("{ named { name } }", False),  # SyncNamed resolves name in a sync resolver
        ("{ named { __typename ... on AsyncNamed { name } } }", True),
        ("{ named { ... on SyncNamed { name } } }", False),
        ("{ named { ...N } } fragment N on Named { name }", False),
        ("{ ...Q } fragment Q on Query { greeting pair { left } }", True),
        ("{ ...Q } fragment Q on Query { greeting plain { value } }", False),
        ("{ __schema { queryType { name } } }", False),
        ("mutation { touch { __typename } }", True),
        ("mutation { touch { ok } }", False),  # ok: a default resolver
        ("subscription { ticks }", False),
    ],
)
def test_an_operation_is_async_only_when_every_field_it_may_resolve_is_async(
    query: str, async_only: bool
) -> None:
    prepared = document_cache(graphql_schema(SCHEMA)).prepare(query)
    assert prepared.async_only is async_only


class _AsyncResolve:
    async def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        return await next_(root, info, **args)


@pytest.mark.parametrize(
    ("middleware", "on_loop"),
    [
        ([], True),
        ([test_schema.async_middleware], True),
        ([_AsyncResolve()], True),
        ([test_schema.tag_middleware], False),
        ([test_schema.ExclaimMiddleware()], False),
        ([test_schema.async_middleware, test_schema.tag_middleware], False),
    ],
)
def test_only_async_middleware_lets_an_operation_run_on_the_loop(
    middleware: list[Any], on_loop: bool
) -> None:
    prepared = document_cache(graphql_schema(SCHEMA)).prepare("{ greeting }")
    assert runs_on_loop(prepared, middleware) is on_loop
    sync_field = document_cache(graphql_schema(SCHEMA)).prepare("{ plain { value } }")
    assert runs_on_loop(sync_field, middleware) is False


async def test_async_queries_answer_while_the_only_pool_thread_is_blocked(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol, "graphql-one-thread/")
    key = uuid.uuid4().hex
    # The pool's one thread is held until an async query, on the loop, releases it.
    blocking = await conn.start(f'{{ blockUntilReleased(key: "{key}") }}')
    mixed = await conn.start('{ hello asyncHello(name: "x") }')  # a sync field: the pool
    assert await conn.execute(f'{{ asyncRelease(key: "{key}") }}') == {
        "data": {"asyncRelease": "done"}
    }
    assert await conn.next_result() == (blocking, {"data": {"blockUntilReleased": "released"}})
    assert await conn.next_result() == (
        mixed,
        {"data": {"hello": "Hello, world!", "asyncHello": "Hello, x!"}},
    )


async def test_the_async_fields_of_one_query_run_at_once(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol)
    key = uuid.uuid4().hex
    # Each field waits until both are resolving: one after the other, neither meets.
    result = await conn.execute(
        f'{{ a: asyncMeet(key: "{key}", parties: 2) b: asyncMeet(key: "{key}", parties: 2) }}'
    )
    assert result == {"data": {"a": "met", "b": "met"}}


async def test_async_middleware_runs_around_an_operation_on_the_loop(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol, "graphql-middleware/")
    # tag_middleware is sync: the pool; the answer is the same either way.
    payload = await conn.execute('{ asyncHello(name: "b") }')
    assert payload == {"data": {"asyncHello": "Hello, B!?"}}


@pytest.mark.parametrize(
    ("operation", "recorded"),
    [
        # A query stops at its next await: nothing recorded.
        ('{ asyncSleep(seconds: 0.3, tag: "query") }', []),
        # A mutation runs to its end, as in the pool (never half done).
        ('mutation { asyncRecord(seconds: 0.3, tag: "mutation") { __typename } }', ["mutation"]),
    ],
)
async def test_a_stopped_operation_on_the_loop_drops_its_result(
    operation: str, recorded: list[str]
) -> None:
    from tests.asgi import application

    test_schema.RECORDED.clear()
    transport = GraphqlWsTransport(application, "graphql/", subprotocol="graphql-transport-ws")
    await transport.connect()
    try:
        conn = Conn(transport)
        await transport.send({"type": "connection_init", "payload": {}})
        assert (await transport.receive())["type"] == "connection_ack"
        op_id = await conn.start(operation)
        await asyncio.sleep(0.05)  # running: asleep in its resolver
        await transport.send({"id": op_id, "type": "complete"})
        assert await conn.execute("{ asyncHello }") == {"data": {"asyncHello": "Hello, world!"}}
        assert test_schema.RECORDED == []  # still sleeping, or stopped
        await asyncio.sleep(0.6)
        assert test_schema.RECORDED == recorded
        # Either way, nothing arrived for the stopped operation.
        received = []
        with pytest.raises(asyncio.TimeoutError):
            while True:
                received.append(await asyncio.wait_for(transport.receive(), 0.3))
        assert [message["type"] for message in received] == ["complete"]  # asyncHello's
        assert all(message.get("id") != op_id for message in received)
    finally:
        await transport.disconnect()
