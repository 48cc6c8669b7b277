"""The schema and consumers the protocol tests run against."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import graphene
import graphql

import gqlws

#: Order in which ``record`` mutations ran, to check strict ordering.
RECORDED: list[str] = []

#: Rendezvous of ``asyncMeet`` fields, by key: (everyone arrived, how many did).
_MEETINGS: dict[str, tuple[asyncio.Event, list[None]]] = {}
#: What ``blockUntilReleased`` waits for, by key; ``asyncRelease`` sets it.
_RELEASES: dict[str, threading.Event] = {}
_RELEASES_LOCK = threading.Lock()
#: How long a rendezvous or a block waits before giving up (a test then fails).
WAIT_LIMIT = 10.0


def _alive(matches: Callable[[Any], bool]) -> int:
    """How many objects the collector tracks in this server that ``matches`` (after a collection).

    Objects frozen by the collector tuning (``gc.freeze``) are not counted.
    """
    gc.collect()
    return sum(1 for o in gc.get_objects() if matches(o))


def _release(key: str) -> threading.Event:
    with _RELEASES_LOCK:
        return _RELEASES.setdefault(key, threading.Event())


class Query(graphene.ObjectType):
    hello = graphene.String(name=graphene.String(default_value="world"))
    async_hello = graphene.String(name=graphene.String(default_value="world"))
    sleep = graphene.String(seconds=graphene.Float(required=True), tag=graphene.String())
    async_sleep = graphene.String(seconds=graphene.Float(required=True), tag=graphene.String())
    thread_name = graphene.String()
    loop_thread_name = graphene.String()
    context_value = graphene.String(key=graphene.String(required=True))
    fail = graphene.String()
    operation_id = graphene.String()
    async_meet = graphene.String(
        key=graphene.String(required=True),
        parties=graphene.Int(required=True),
        description="Waits until `parties` fields of this key are all resolving at once",
    )
    block_until_released = graphene.String(
        key=graphene.String(required=True), description="Holds its thread until released"
    )
    async_release = graphene.String(key=graphene.String(required=True))
    twisted_requests_alive = graphene.Int(
        description="Twisted HTTP requests alive in this process (Daphne: what WebSockets hold)"
    )
    handshake_headers_alive = graphene.Int(
        description="Non-empty websockets header collections alive here (uvicorn's handshakes)"
    )

    @staticmethod
    def resolve_hello(root: Any, info: Any, name: str) -> str:
        return f"Hello, {name}!"

    @staticmethod
    async def resolve_async_hello(root: Any, info: Any, name: str) -> str:
        await asyncio.sleep(0)
        return f"Hello, {name}!"

    @staticmethod
    def resolve_sleep(root: Any, info: Any, seconds: float, tag: str | None = None) -> str:
        time.sleep(seconds)
        if tag:
            RECORDED.append(tag)
        return tag or "slept"

    @staticmethod
    async def resolve_async_sleep(
        root: Any, info: Any, seconds: float, tag: str | None = None
    ) -> str:
        await asyncio.sleep(seconds)
        if tag:
            RECORDED.append(tag)
        return tag or "slept"

    @staticmethod
    def resolve_thread_name(root: Any, info: Any) -> str:
        return threading.current_thread().name

    @staticmethod
    async def resolve_loop_thread_name(root: Any, info: Any) -> str:
        return threading.current_thread().name

    @staticmethod
    async def resolve_async_meet(root: Any, info: Any, key: str, parties: int) -> str:
        everyone, arrived = _MEETINGS.setdefault(key, (asyncio.Event(), []))
        arrived.append(None)
        if len(arrived) >= parties:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), WAIT_LIMIT)
        except asyncio.TimeoutError:
            return "alone"  # the others resolve one after the other, not at once
        return "met"

    @staticmethod
    def resolve_block_until_released(root: Any, info: Any, key: str) -> str:
        return "released" if _release(key).wait(WAIT_LIMIT) else "never released"

    @staticmethod
    async def resolve_async_release(root: Any, info: Any, key: str) -> str:
        _release(key).set()
        return "done"

    @staticmethod
    async def resolve_twisted_requests_alive(root: Any, info: Any) -> int:
        from twisted.web.http import Request

        return _alive(lambda o: isinstance(o, Request))

    @staticmethod
    async def resolve_handshake_headers_alive(root: Any, info: Any) -> int:
        from websockets.datastructures import Headers

        return _alive(lambda o: isinstance(o, Headers) and len(o) > 0)

    @staticmethod
    def resolve_context_value(root: Any, info: Any, key: str) -> str | None:
        value = info.context.get(key)
        return None if value is None else str(value)

    @staticmethod
    def resolve_fail(root: Any, info: Any) -> str:
        raise RuntimeError("Resolver failed on purpose")

    @staticmethod
    def resolve_operation_id(root: Any, info: Any) -> str | None:
        return info.context.graphql_operation_id


class SetContext(graphene.Mutation):
    class Arguments:
        key = graphene.String(required=True)
        value = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any, key: str, value: str) -> SetContext:
        setattr(info.context, key, value)
        assert info.context[key] == value
        return SetContext(ok=True)


class AsyncRecord(graphene.Mutation):
    """Sleeps, then records its tag: what a stopped mutation still does."""

    class Arguments:
        seconds = graphene.Float(required=True)
        tag = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    async def mutate(root: Any, info: Any, seconds: float, tag: str) -> AsyncRecord:
        await asyncio.sleep(seconds)
        RECORDED.append(tag)
        return AsyncRecord(ok=True)


class Mutation(graphene.ObjectType):
    set_context = SetContext.Field()
    async_record = AsyncRecord.Field()


schema = graphene.Schema(query=Query, mutation=Mutation)


class Consumer(gqlws.GraphqlWsConsumer):
    schema = schema
    connection_init_wait_timeout = 2.0

    async def on_connect(self, payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("reject"):
            raise PermissionError("Rejected on request")
        if isinstance(payload, dict) and payload.get("ack"):
            return {"greeting": payload["ack"]}
        return None


class StrictConsumer(Consumer):
    strict_ordering = True


class KeepaliveConsumer(Consumer):
    send_keepalive_every = 0.2


def tag_middleware(next_: Any, root: Any, info: Any, **args: Any) -> Any:
    """Sync middleware: upper-cases the ``name`` argument of every field taking one.

    It works on arguments, not results: under an async middleware, what
    ``next_`` returns may be awaitable, which a sync function cannot await.
    """
    if isinstance(args.get("name"), str):
        args["name"] = args["name"].upper()
    return next_(root, info, **args)


async def async_middleware(next_: Any, root: Any, info: Any, **args: Any) -> Any:
    """Async middleware: appends '!' to ``hello`` and ``asyncHello``."""
    result = next_(root, info, **args)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    if info.field_name in ("hello", "asyncHello") and isinstance(result, str):
        return result + "?"
    return result


class MiddlewareConsumer(Consumer):
    middleware = [tag_middleware, async_middleware]


class BrokenConsumer(Consumer):
    """Fails inside the server, before any resolver runs."""

    async def on_operation(self, op_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("Broken on purpose")


class ExclaimMiddleware:
    """A middleware object (graphql-core calls its ``resolve``)."""

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        if isinstance(args.get("name"), str):
            args["name"] += "!!"
        return next_(root, info, **args)


class ManagerMiddlewareConsumer(Consumer):
    middleware = graphql.MiddlewareManager(ExclaimMiddleware(), tag_middleware)


class UnsendableAckConsumer(Consumer):
    """Its on_connect returns an ack payload that cannot be sent as JSON."""

    async def on_connect(self, payload: Any) -> Any:
        return {"not json": {1, 2}}


class UnlimitedConsumer(Consumer):
    """No rate limit: benchmarks' closed loops of queries outrun the default."""

    rate_limit = None


class OneThreadConsumer(Consumer):
    """One pool thread: a blocked sync resolver holds it."""

    max_worker_threads = 1


class LimitedConsumer(Consumer):
    """Small limits, to meet them in tests."""

    max_message_size = 1000
    max_operations = 2
    rate_limit = 50.0
    rate_limit_burst = 20
    max_query_depth = 2
    max_query_complexity = 4
