"""graphql-transport-ws end to end: every message type and close code of the spec.

Each test runs twice: in process through Channels' communicator, and over a
real socket to a Daphne process (the ``connect`` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Connect, closed_with

PROTOCOL = ["graphql-transport-ws"]


async def open_acked(connect: Connect, path: str = "graphql/", payload: Any = None) -> Any:
    transport = await connect(path, PROTOCOL)
    assert transport.subprotocol == "graphql-transport-ws"
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await transport.send(message)
    assert (await transport.receive())["type"] == "connection_ack"
    return transport


def assert_closed(closed: tuple[int | None, str], code: int, reason: str) -> None:
    assert closed == (code, reason)


async def assert_still_serving(connect: Connect) -> None:
    """A fresh connection to the same server still gets answers."""
    other = await open_acked(connect)
    await other.send({"id": "check", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await other.receive())["payload"] == {"data": {"hello": "Hello, world!"}}


async def test_connection_init_is_acknowledged_with_the_on_connect_payload(
    connect: Connect,
) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"type": "connection_init", "payload": {"ack": "hi"}})
    assert await transport.receive() == {"type": "connection_ack", "payload": {"greeting": "hi"}}


async def test_query_gets_next_then_complete(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert await transport.receive() == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"hello": "Hello, world!"}},
    }
    assert await transport.receive() == {"id": "1", "type": "complete"}


async def test_variables_and_operation_name_are_honoured(connect: Connect) -> None:
    transport = await open_acked(connect)
    query = "query A { hello } query B($n: String) { hello(name: $n) }"
    payload = {"query": query, "variables": {"n": "Bob"}, "operationName": "B"}
    await transport.send({"id": "1", "type": "subscribe", "payload": payload})
    assert (await transport.receive())["payload"] == {"data": {"hello": "Hello, Bob!"}}


async def test_resolver_errors_come_in_next_formatted_per_the_graphql_spec(
    connect: Connect,
) -> None:
    transport = await open_acked(connect)
    await transport.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello fail }"}})
    message = await transport.receive()
    assert message["type"] == "next"
    assert message["payload"]["data"] == {"hello": "Hello, world!", "fail": None}
    assert message["payload"]["errors"] == [
        {
            "message": "Resolver failed on purpose",
            "locations": [{"line": 1, "column": 9}],
            "path": ["fail"],
        }
    ]
    assert (await transport.receive())["type"] == "complete"


async def test_invalid_graphql_gets_error_with_a_list_and_nothing_after(
    connect: Connect,
) -> None:
    transport = await open_acked(connect)
    await transport.send({"id": "1", "type": "subscribe", "payload": {"query": "{ nope }"}})
    await transport.send({"id": "2", "type": "subscribe", "payload": {"query": "{ {"}})
    first, second = await transport.receive(), await transport.receive()
    by_id = {first["id"]: first, second["id"]: second}
    assert by_id["1"]["type"] == "error"
    assert by_id["1"]["payload"] == [
        {
            "message": "Cannot query field 'nope' on type 'Query'.",
            "locations": [{"line": 1, "column": 3}],
        }
    ]
    assert by_id["2"]["type"] == "error"
    assert by_id["2"]["payload"][0]["message"].startswith("Syntax Error")
    # No complete follows an error: the next frame is the answer to a ping.
    await transport.send({"type": "ping"})
    assert await transport.receive() == {"type": "pong"}


async def test_ping_is_answered_with_pong_and_pong_is_accepted(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send({"type": "pong"})
    await transport.send({"type": "ping", "payload": {"t": 1}})
    assert await transport.receive() == {"type": "pong"}


async def test_server_pings_every_send_keepalive_every(connect: Connect) -> None:
    transport = await open_acked(connect, "graphql-keepalive/")
    assert await transport.receive() == {"type": "ping"}
    assert await transport.receive() == {"type": "ping"}


async def test_client_complete_cancels_a_running_operation(connect: Connect) -> None:
    transport = await open_acked(connect)
    query = "{ asyncSleep(seconds: 30) }"
    await transport.send({"id": "slow", "type": "subscribe", "payload": {"query": query}})
    await transport.send({"id": "slow", "type": "complete"})
    await transport.send({"id": "fast", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["id"] == "fast"
    assert await transport.receive() == {"id": "fast", "type": "complete"}
    # The id is free again once completed by the client.
    await transport.send({"id": "slow", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["payload"] == {"data": {"hello": "Hello, world!"}}


@pytest.mark.parametrize(
    ("frame", "reason_part"),
    [
        ("{not json", "JSON-parseable"),
        ('{"type": "teleport"}', "Unexpected message of type 'teleport'"),
        ('{"type": "subscribe", "payload": {"query": "{ hello }"}}', "'id'"),
        ('{"id": "1", "type": "subscribe", "payload": {"query": 7}}', "'query'"),
        ('{"id": "1", "type": "next", "payload": {}}', "'next'"),
    ],
)
async def test_invalid_message_closes_with_4400_and_others_are_still_served(
    connect: Connect, frame: str, reason_part: str
) -> None:
    transport = await open_acked(connect)
    await transport.send_text(frame)
    code, reason = await closed_with(transport)
    assert code == 4400
    assert reason_part in reason
    await assert_still_serving(connect)


async def test_subscribe_before_connection_init_closes_with_4401(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert_closed(await closed_with(transport), 4401, "Unauthorized")


async def test_rejecting_on_connect_closes_with_4403(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"type": "connection_init", "payload": {"reject": True}})
    assert_closed(await closed_with(transport), 4403, "Forbidden")
    await assert_still_serving(connect)


async def test_no_connection_init_in_time_closes_with_4408(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)  # the test consumer waits 2 s
    assert_closed(await closed_with(transport), 4408, "Connection initialisation timeout")


async def test_duplicate_operation_id_closes_with_4409(connect: Connect) -> None:
    transport = await open_acked(connect)
    query = {"query": "{ asyncSleep(seconds: 30) }"}
    await transport.send({"id": "dup", "type": "subscribe", "payload": query})
    await transport.send({"id": "dup", "type": "subscribe", "payload": query})
    assert_closed(await closed_with(transport), 4409, "Subscriber for dup already exists")


async def test_second_connection_init_closes_with_4429(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send({"type": "connection_init"})
    assert_closed(await closed_with(transport), 4429, "Too many initialisation requests")


async def test_an_internal_failure_is_an_error_for_that_operation_only(connect: Connect) -> None:
    transport = await open_acked(connect, "graphql-broken/")
    await transport.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
    message = await transport.receive()
    assert message == {
        "id": "1",
        "type": "error",
        "payload": [{"message": "Internal server error"}],
    }
    await transport.send({"type": "ping"})
    assert await transport.receive() == {"type": "pong"}


async def test_many_concurrent_connections_are_served_independently(connect: Connect) -> None:
    transports = [await open_acked(connect) for _ in range(5)]

    async def ask(transport: Any, index: int) -> Any:
        query = {"query": f'{{ hello(name: "{index}") }}'}
        await transport.send({"id": str(index), "type": "subscribe", "payload": query})
        return (await transport.receive())["payload"]["data"]["hello"]

    answers = await asyncio.gather(*(ask(t, i) for i, t in enumerate(transports)))
    assert answers == [f"Hello, {i}!" for i in range(5)]


async def test_a_failure_inside_the_server_closes_with_4500_never_1011(connect: Connect) -> None:
    transport = await connect("graphql-unsendable/", PROTOCOL)
    await transport.send({"type": "connection_init"})
    assert_closed(await closed_with(transport), 4500, "Internal server error")
    await assert_still_serving(connect)
