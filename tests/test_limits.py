"""Limits: frame size, operations per connection, message rate, query depth and complexity."""

from __future__ import annotations

import pytest

from gqlws.execution import DocumentCache, InvalidDocument, graphql_schema
from gqlws.limits import TokenBucket, depth_and_complexity_rule
from tests.conftest import Connect, closed_with
from tests.schema import schema

PROTOCOL = ["graphql-transport-ws"]


async def acked(connect: Connect, path: str = "graphql-limited/") -> object:
    transport = await connect(path, PROTOCOL)
    await transport.send({"type": "connection_init"})
    assert (await transport.receive())["type"] == "connection_ack"
    return transport


def test_the_token_bucket_allows_bursts_then_the_average_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # half a token so far
    assert bucket.take(0.1) is True  # one token refilled after 0.1 s
    assert bucket.take(100.0) and bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)  # refills never exceed the burst
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1, now=0)


def test_depth_and_complexity_limits_reject_documents_with_a_clear_message() -> None:
    gql = graphql_schema(schema)
    cache = DocumentCache(gql, extra_rules=(depth_and_complexity_rule(1, 3),))
    assert cache.prepare("{ hello asyncHello }")
    with pytest.raises(InvalidDocument, match="selects 4 fields; the limit is 3"):
        cache.prepare("{ a: hello b: hello c: hello d: hello }")
    with pytest.raises(InvalidDocument, match="nested 2 levels deep; the limit is 1"):
        cache.prepare('mutation M { setContext(key: "k", value: "v") { ok } }')
    fragments = "query Q { ...F ...F } fragment F on Query { hello asyncHello }"
    with pytest.raises(InvalidDocument, match="Operation 'Q' selects 4 fields"):
        cache.prepare(fragments)


async def test_a_frame_over_the_size_limit_closes_with_1009(connect: Connect) -> None:
    transport = await acked(connect)
    await transport.send({"type": "ping", "payload": {"junk": "x" * 2000}})
    code, reason = await closed_with(transport)
    assert code == 1009
    assert reason == "Message too big: 2041 bytes, the limit is 1000"


async def test_operations_beyond_the_limit_get_an_error_and_the_others_go_on(
    connect: Connect,
) -> None:
    transport = await acked(connect)
    slow = {"query": "{ asyncSleep(seconds: 30) }"}
    for op_id in ("1", "2", "3"):
        await transport.send({"id": op_id, "type": "subscribe", "payload": slow})
    message = await transport.receive()
    assert message["id"] == "3" and message["type"] == "error"
    assert (
        "Too many operations on this connection (the limit is 2)"
        in message["payload"][0]["message"]
    )
    await transport.send({"id": "1", "type": "complete"})
    await transport.send({"id": "4", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["payload"] == {"data": {"hello": "Hello, world!"}}


async def test_a_flood_closes_the_connection_with_1008_and_others_are_served(
    connect: Connect,
) -> None:
    flooding = await acked(connect)
    for _ in range(200):
        await flooding.send({"type": "pong"})
    code, reason = await closed_with(flooding)
    assert code == 1008
    assert reason == "Rate limit exceeded"
    other = await acked(connect)
    await other.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await other.receive())["type"] == "next"


async def test_too_deep_a_query_is_refused_before_any_resolver_runs(connect: Connect) -> None:
    transport = await acked(connect)
    deep = {"query": "{ __schema { types { name } } }"}
    await transport.send({"id": "1", "type": "subscribe", "payload": deep})
    message = await transport.receive()
    assert message["type"] == "error"
    assert message["payload"][0]["message"] == (
        "The operation is nested 3 levels deep; the limit is 2."
    )
    allowed = {"query": 'mutation { setContext(key: "a", value: "b") { ok } }'}
    await transport.send({"id": "2", "type": "subscribe", "payload": allowed})
    assert (await transport.receive())["type"] == "next"
