"""Legacy graphql-ws (subscriptions-transport-ws) end to end: every message type.

Each test runs twice: in process through Channels' communicator, and over a
real socket to a Daphne process (the ``connect`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from gqlws.transport import GraphqlWsConnectionClosed
from tests.conftest import Connect

PROTOCOL = ["graphql-ws"]


async def open_acked(connect: Connect, path: str = "graphql/", payload: Any = "") -> Any:
    transport = await connect(path, PROTOCOL)
    assert transport.subprotocol == "graphql-ws"
    await transport.send({"type": "connection_init", "payload": payload})
    assert (await transport.receive())["type"] == "connection_ack"
    return transport


async def test_connection_init_is_acknowledged(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"type": "connection_init", "payload": {"ack": "hi"}})
    assert await transport.receive() == {"type": "connection_ack", "payload": {"greeting": "hi"}}


async def test_rejected_connection_gets_connection_error_then_close(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"type": "connection_init", "payload": {"reject": True}})
    assert await transport.receive() == {
        "type": "connection_error",
        "payload": {"message": "Rejected on request"},
    }
    with pytest.raises(GraphqlWsConnectionClosed) as closed:
        await transport.receive()
    assert closed.value.code == 4403


async def test_start_gets_data_then_complete(connect: Connect) -> None:
    transport = await open_acked(connect)
    payload = {"query": "query($n: String) { hello(name: $n) }", "variables": {"n": "Ann"}}
    await transport.send({"id": "1", "type": "start", "payload": payload})
    assert await transport.receive() == {
        "id": "1",
        "type": "data",
        "payload": {"data": {"hello": "Hello, Ann!"}},
    }
    assert await transport.receive() == {"id": "1", "type": "complete"}


async def test_start_sent_right_after_connection_init_waits_for_the_ack(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"type": "connection_init", "payload": {}})
    await transport.send({"id": "1", "type": "start", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["type"] == "connection_ack"
    assert (await transport.receive())["type"] == "data"
    assert (await transport.receive())["type"] == "complete"


async def test_invalid_graphql_answers_data_with_errors_then_complete(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send({"id": "1", "type": "start", "payload": {"query": "{ nope }"}})
    message = await transport.receive()
    assert message["type"] == "data"
    assert message["payload"]["data"] is None
    assert (
        message["payload"]["errors"][0]["message"] == "Cannot query field 'nope' on type 'Query'."
    )
    assert await transport.receive() == {"id": "1", "type": "complete"}


async def test_stop_ends_a_running_operation_with_complete(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send(
        {"id": "slow", "type": "start", "payload": {"query": "{ asyncSleep(seconds: 30) }"}}
    )
    await transport.send({"id": "slow", "type": "stop"})
    assert await transport.receive() == {"id": "slow", "type": "complete"}
    await transport.send({"id": "2", "type": "start", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["id"] == "2"


async def test_keepalive_ka_follows_the_ack_and_repeats(connect: Connect) -> None:
    transport = await open_acked(connect, "graphql-keepalive/")
    assert await transport.receive() == {"type": "ka"}
    assert await transport.receive() == {"type": "ka"}


async def test_connection_terminate_closes_the_socket(connect: Connect) -> None:
    transport = await open_acked(connect)
    await transport.send({"type": "connection_terminate"})
    with pytest.raises(GraphqlWsConnectionClosed) as closed:
        await transport.receive()
    assert closed.value.code == 1000


@pytest.mark.parametrize(
    ("frame", "error_id", "text"),
    [
        ("{not json", None, "JSON-parseable"),
        ('{"id": "5", "type": "teleport"}', "5", "Invalid message type: 'teleport'"),
        ('{"type": "start", "payload": {"query": "{ hello }"}}', None, "'id'"),
        ('{"id": "6", "type": "start", "payload": {"query": ["x"]}}', "6", "'query'"),
    ],
)
async def test_bad_input_gets_an_error_message_and_the_connection_keeps_serving(
    connect: Connect, frame: str, error_id: str | None, text: str
) -> None:
    transport = await open_acked(connect)
    await transport.send_text(frame)
    error = await transport.receive()
    assert error["type"] == "error"
    assert error.get("id") == error_id
    assert text in error["payload"]["message"]
    await transport.send({"id": "ok", "type": "start", "payload": {"query": "{ hello }"}})
    assert (await transport.receive())["payload"] == {"data": {"hello": "Hello, world!"}}


async def test_start_before_connection_init_is_an_error(connect: Connect) -> None:
    transport = await connect("graphql/", PROTOCOL)
    await transport.send({"id": "1", "type": "start", "payload": {"query": "{ hello }"}})
    error = await transport.receive()
    assert error["type"] == "error" and error["id"] == "1"
    assert "connection_init" in error["payload"]["message"]
