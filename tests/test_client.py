"""The Python client against a scripted in-memory server, on both subprotocols.

``FakeTransport`` implements the transport contract with queues. A test
scripts the server with a *responder*: a function called synchronously with
each frame the client sends, returning the frames the server answers with.
Frames the server sends on its own are pushed with ``server_push``. Nothing
waits on wall-clock time except the timeouts that bound each wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gqlws import testing
from gqlws.client import (
    ClientSubscription,
    GraphqlWsClient,
    GraphqlWsConnectionRejected,
    GraphqlWsResponseError,
)
from gqlws.transport import GraphqlWsConnectionClosed, GraphqlWsTransport

Message = dict[str, Any]
Responder = Callable[[Message], list[Message]]

# Bounds every wait of a test, so a bug shows as a failure, not a hang.
WAIT = 2.0
# The fake server queues its frames synchronously, so a receive that finds
# nothing within this short bound has read everything the server sent.
NOTHING_LEFT = 0.05


class _Close:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class FakeTransport(GraphqlWsTransport):
    """A transport whose far end is a responder function instead of a server."""

    TIMEOUT = WAIT

    def __init__(self, subprotocol: str, responder: Responder | None = None) -> None:
        self._subprotocol_chosen = subprotocol
        self.responder = responder or (lambda message: [])
        self.sent: list[Message] = []
        self._incoming: asyncio.Queue[Message | _Close] = asyncio.Queue()
        self._close: _Close | None = None
        self._connected = False
        self.disconnected = False

    # ---- The server's side ---------------------------------------------

    def server_push(self, *messages: Message) -> None:
        for message in messages:
            self._incoming.put_nowait(message)

    def server_close(self, code: int, reason: str = "") -> None:
        self._incoming.put_nowait(_Close(code, reason))

    def sent_of_type(self, kind: str) -> list[Message]:
        return [message for message in self.sent if message.get("type") == kind]

    # ---- The transport contract ------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol_chosen if self._connected else None

    @property
    def close_code(self) -> int | None:
        return self._close.code if self._close else None

    async def connect(self, timeout: float | None = None) -> None:
        self._connected = True

    async def send(self, message: Message) -> None:
        if self._close is not None:
            raise GraphqlWsConnectionClosed(self._close.code, self._close.reason)
        self.sent.append(message)
        self.server_push(*self.responder(message))

    async def receive(self, timeout: float | None = None) -> Message:
        if self._close is not None and self._incoming.empty():
            raise GraphqlWsConnectionClosed(self._close.code, self._close.reason)
        item = await asyncio.wait_for(self._incoming.get(), timeout or self.TIMEOUT)
        if isinstance(item, _Close):
            self._close = item
            raise GraphqlWsConnectionClosed(item.code, item.reason)
        return item

    async def disconnect(self, timeout: float | None = None) -> None:
        self.disconnected = True


@dataclass(frozen=True)
class Dialect:
    """What each message is called on one subprotocol."""

    subprotocol: str
    start: str
    result: str
    stop: str


TRANSPORT_WS = Dialect("graphql-transport-ws", "subscribe", "next", "complete")
GRAPHQL_WS = Dialect("graphql-ws", "start", "data", "stop")


@pytest.fixture(params=[TRANSPORT_WS, GRAPHQL_WS], ids=lambda d: d.subprotocol)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param


def graphql_server(dialect: Dialect, results: dict[str, list[Message]] | None = None) -> Responder:
    """A responder that acks the connection and answers each query from ``results``.

    ``results`` maps a query text to the frames answering it; ``{id}`` in
    them is replaced by the operation id. A query not listed gets a
    confirmation (``{"data": None}``) and stays open, like a subscription.
    """
    results = results or {}

    def respond(message: Message) -> list[Message]:
        if message["type"] == "connection_init":
            return [{"type": "connection_ack"}]
        if message["type"] == dialect.start:
            op_id = message["id"]
            frames = results.get(message["payload"]["query"])
            if frames is None:
                return [{"id": op_id, "type": dialect.result, "payload": {"data": None}}]
            return [{**frame, "id": op_id} for frame in frames]
        return []

    return respond


async def connected_client(
    dialect: Dialect, responder: Responder | None = None
) -> tuple[GraphqlWsClient, FakeTransport]:
    transport = FakeTransport(dialect.subprotocol, responder or graphql_server(dialect))
    client = GraphqlWsClient(transport)
    await client.connect_and_init()
    return client, transport


# ---- Connection ---------------------------------------------------------------


async def test_connect_and_init_sends_connection_init_and_is_connected_after_the_ack(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)

    assert client.connected
    assert client.subprotocol == dialect.subprotocol
    assert transport.sent[0]["type"] == "connection_init"


async def test_connect_and_init_sends_the_given_payload_with_connection_init(
    dialect: Dialect,
) -> None:
    transport = FakeTransport(dialect.subprotocol, graphql_server(dialect))
    await GraphqlWsClient(transport).connect_and_init(payload={"token": "t"})

    assert transport.sent == [{"type": "connection_init", "payload": {"token": "t"}}]


async def test_connect_only_opens_the_socket_and_sends_nothing(dialect: Dialect) -> None:
    transport = FakeTransport(dialect.subprotocol, graphql_server(dialect))
    client = GraphqlWsClient(transport)
    await client.connect_and_init(connect_only=True)

    assert client.connected
    assert transport.sent == []


async def test_a_rejection_by_close_4403_raises_connection_rejected_with_the_code() -> None:
    transport = FakeTransport("graphql-transport-ws")
    transport.server_close(4403, "Forbidden")
    client = GraphqlWsClient(transport)

    with pytest.raises(GraphqlWsConnectionRejected) as raised:
        await client.connect_and_init()

    assert (raised.value.code, raised.value.reason) == (4403, "Forbidden")
    assert not client.connected


async def test_a_connection_error_on_graphql_ws_raises_connection_rejected_with_its_payload() -> (
    None
):
    transport = FakeTransport("graphql-ws")
    transport.server_push({"type": "connection_error", "payload": {"message": "Go away"}})

    with pytest.raises(GraphqlWsConnectionRejected) as raised:
        await GraphqlWsClient(transport).connect_and_init()

    assert raised.value.payload == {"message": "Go away"}


async def test_finalize_sends_connection_terminate_on_graphql_ws_only(dialect: Dialect) -> None:
    client, transport = await connected_client(dialect)
    await client.finalize()

    expected = 1 if dialect is GRAPHQL_WS else 0
    assert len(transport.sent_of_type("connection_terminate")) == expected
    assert transport.disconnected
    assert not client.connected


# ---- Queries and mutations ------------------------------------------------------


async def test_execute_returns_the_result_payload_and_consumes_the_complete(
    dialect: Dialect,
) -> None:
    answer: list[Message] = [
        {"type": dialect.result, "payload": {"data": {"a": 1}}},
        {"type": "complete"},
    ]
    client, transport = await connected_client(dialect, graphql_server(dialect, {"{ a }": answer}))

    assert await client.execute("{ a }", variables={"x": 1}) == {"data": {"a": 1}}

    [start] = transport.sent_of_type(dialect.start)
    assert start["payload"] == {"query": "{ a }", "variables": {"x": 1}}
    with pytest.raises(asyncio.TimeoutError):
        await client.receive(timeout=NOTHING_LEFT)  # The complete was consumed.


async def test_execute_sends_the_operation_name_and_dedents_the_query(dialect: Dialect) -> None:
    client, transport = await connected_client(dialect)
    await client.start(
        """
        query Q { a }
        """,
        operation_name="Q",
    )

    [start] = transport.sent_of_type(dialect.start)
    assert start["payload"] == {"query": "\nquery Q { a }\n", "variables": {}, "operationName": "Q"}


async def test_execute_raises_response_error_carrying_the_errors_of_the_result(
    dialect: Dialect,
) -> None:
    errors = [{"message": "Boom"}]
    answer = [{"type": dialect.result, "payload": {"data": None, "errors": errors}}]
    answer.append({"type": "complete"})
    client, _ = await connected_client(dialect, graphql_server(dialect, {"{ boom }": answer}))

    with pytest.raises(GraphqlWsResponseError) as raised:
        await client.execute("{ boom }")

    assert raised.value.response["payload"]["errors"] == errors
    assert raised.value.message is None
    # The complete that followed the failed result is dropped, not left to be received.
    with pytest.raises(asyncio.TimeoutError):
        await client.receive(timeout=NOTHING_LEFT)


async def test_execute_raises_response_error_on_an_error_message_and_expects_nothing_after(
    dialect: Dialect,
) -> None:
    answer = [{"type": "error", "payload": [{"message": "Cannot query field 'nope'"}]}]
    client, _ = await connected_client(dialect, graphql_server(dialect, {"{ nope }": answer}))

    with pytest.raises(GraphqlWsResponseError) as raised:
        await client.execute("{ nope }")

    assert raised.value.response["type"] == "error"
    assert raised.value.response["payload"] == [{"message": "Cannot query field 'nope'"}]


def test_response_error_reads_as_the_reference_library_wrote_it() -> None:
    response = {"id": "1", "type": "error", "payload": [{"message": "x"}]}

    assert str(GraphqlWsResponseError(response)) == f"Error in GraphQL response: {response}!"
    assert str(GraphqlWsResponseError(response, "Oops")) == f"Oops: {response}!"
    assert GraphqlWsResponseError(response, "Oops").response is response


# ---- Subscriptions ----------------------------------------------------------------


async def test_subscribe_consumes_the_confirmation_and_iteration_yields_each_notification(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    sub = await client.subscribe("subscription { s }")

    assert isinstance(sub, ClientSubscription)
    assert sub == transport.sent_of_type(dialect.start)[0]["id"]
    for number in (1, 2):
        transport.server_push({"id": sub, "type": dialect.result, "payload": {"data": number}})
    transport.server_push({"id": sub, "type": "complete"})

    assert [payload async for payload in sub] == [{"data": 1}, {"data": 2}]
    assert sub.ended


async def test_a_first_result_with_errors_is_a_refused_subscription(dialect: Dialect) -> None:
    refusal = {"type": dialect.result, "payload": {"data": None, "errors": [{"message": "no"}]}}
    responder = graphql_server(dialect, {"subscription { s }": [refusal]})
    client, _ = await connected_client(dialect, responder)

    with pytest.raises(GraphqlWsResponseError):
        await client.subscribe("subscription { s }")


async def test_the_default_confirmation_with_null_errors_is_not_a_refusal(
    dialect: Dialect,
) -> None:
    confirmation = {"type": dialect.result, "payload": {"data": None, "errors": None}}
    responder = graphql_server(dialect, {"subscription { s }": [confirmation]})
    client, _ = await connected_client(dialect, responder)

    sub = await client.subscribe("subscription { s }")

    assert not sub.ended


async def test_subscription_complete_sends_the_protocols_cancel_message_and_drops_late_frames(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    sub = await client.subscribe("subscription { s }")

    await sub.complete()
    await sub.complete()  # Complete exactly once.
    transport.server_push({"id": sub, "type": dialect.result, "payload": {"data": "late"}})
    transport.server_push({"id": sub, "type": "complete"})

    assert transport.sent_of_type(dialect.stop) == [{"type": dialect.stop, "id": sub}]
    with pytest.raises(StopAsyncIteration):
        await sub.next()
    with pytest.raises(asyncio.TimeoutError):
        await client.receive(timeout=NOTHING_LEFT)


async def test_an_error_message_ends_the_subscription_with_response_error(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    sub = await client.subscribe("subscription { s }")
    transport.server_push({"id": sub, "type": "error", "payload": [{"message": "gone"}]})

    with pytest.raises(GraphqlWsResponseError):
        await sub.next()
    assert sub.ended


async def test_the_subscription_id_works_with_the_reference_style_receive(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    sub_id = await client.subscribe("subscription { s }")
    transport.server_push({"id": sub_id, "type": dialect.result, "payload": {"data": 7}})

    assert await client.receive(wait_id=sub_id) == {"data": 7}
    await client.complete(sub_id)
    assert transport.sent[-1] == {"type": dialect.stop, "id": sub_id}


# ---- Demultiplexing ------------------------------------------------------------------


async def test_a_notification_arriving_while_execute_waits_is_delivered_to_its_subscription(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    sub = await client.subscribe("subscription { s }")
    notification: Message = {"id": sub, "type": dialect.result, "payload": {"data": "event"}}
    # The server interleaves the notification before the query's own answer.
    answer: list[Message] = [
        {"type": dialect.result, "payload": {"data": {"a": 1}}},
        {"type": "complete"},
    ]

    def respond(message: Message) -> list[Message]:
        if message["type"] == dialect.start:
            return [notification, *({**frame, "id": message["id"]} for frame in answer)]
        return []

    transport.responder = respond

    assert await client.execute("{ a }") == {"data": {"a": 1}}
    assert await asyncio.wait_for(sub.next(), WAIT) == {"data": "event"}


async def test_receive_without_wait_id_returns_the_oldest_buffered_message_first(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    transport.server_push(
        {"id": "first", "type": dialect.result, "payload": {"n": 1}},
        {"id": "second", "type": dialect.result, "payload": {"n": 2}},
    )

    assert await client.receive(wait_id="second") == {"n": 2}
    assert await client.receive(raw_response=True) == {
        "id": "first",
        "type": dialect.result,
        "payload": {"n": 1},
    }


async def test_concurrent_waiters_each_get_the_messages_of_their_own_operation(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    waiters = [asyncio.create_task(client.receive(wait_id=op_id)) for op_id in ("a", "b", "c")]
    for op_id in ("c", "a", "b"):
        transport.server_push({"id": op_id, "type": dialect.result, "payload": {"op": op_id}})

    results = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)

    assert results == [{"op": "a"}, {"op": "b"}, {"op": "c"}]


async def test_a_closed_socket_raises_connection_closed_after_the_frames_sent_before_it(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    transport.server_push({"id": "x", "type": dialect.result, "payload": {"n": 1}})
    transport.server_close(1011, "bye")

    assert await client.receive(wait_id="x") == {"n": 1}
    with pytest.raises(GraphqlWsConnectionClosed) as raised:
        await client.receive()
    assert raised.value.code == 1011
    assert not client.connected


# ---- Keepalive ----------------------------------------------------------------------------


async def test_ka_is_skipped_silently_on_graphql_ws() -> None:
    client, transport = await connected_client(GRAPHQL_WS)
    transport.server_push({"type": "ka"}, {"id": "x", "type": "data", "payload": {"n": 1}})

    assert await client.receive() == {"n": 1}


async def test_a_server_ping_is_answered_with_pong_and_never_returned() -> None:
    transport = FakeTransport("graphql-transport-ws", graphql_server(TRANSPORT_WS))
    # The ping arrives before the ack: it is answered even during the handshake.
    transport.server_push({"type": "ping"})
    client = GraphqlWsClient(transport)
    await client.connect_and_init()
    transport.server_push({"type": "ping"}, {"type": "pong"}, {"id": "x", "type": "next"})

    assert await client.receive(raw_response=True) == {"id": "x", "type": "next"}
    assert transport.sent_of_type("pong") == [{"type": "pong"}, {"type": "pong"}]


async def test_ping_waits_for_the_servers_pong() -> None:
    def respond(message: Message) -> list[Message]:
        return (
            [{"type": "pong"}]
            if message["type"] == "ping"
            else graphql_server(TRANSPORT_WS)(message)
        )

    client, transport = await connected_client(TRANSPORT_WS, respond)

    await client.ping(timeout=WAIT)

    assert transport.sent_of_type("ping") == [{"type": "ping"}]


# ---- Raw messages -----------------------------------------------------------------------


async def test_send_generates_an_id_and_leaves_out_fields_that_are_none(dialect: Dialect) -> None:
    client, transport = await connected_client(dialect)

    op_id = await client.send(msg_type="custom")
    no_id = await client.send(msg_id=None, msg_type="custom", payload={"p": 1})

    assert isinstance(op_id, str) and len(op_id) == 32
    assert no_id is None
    assert transport.sent[-2:] == [
        {"id": op_id, "type": "custom"},
        {"type": "custom", "payload": {"p": 1}},
    ]


async def test_receive_raises_response_error_on_a_payload_with_errors(dialect: Dialect) -> None:
    client, transport = await connected_client(dialect)
    transport.server_push({"id": "x", "type": dialect.result, "payload": {"errors": [{"m": 1}]}})

    with pytest.raises(GraphqlWsResponseError):
        await client.receive()


async def test_receive_checks_assert_type_and_assert_id(dialect: Dialect) -> None:
    client, transport = await connected_client(dialect)
    transport.server_push({"id": "x", "type": "complete"}, {"id": "y", "type": "complete"})

    with pytest.raises(AssertionError):
        await client.receive(assert_type=dialect.result)
    with pytest.raises(AssertionError):
        await client.receive(assert_id="x")


async def test_wait_response_skips_payloads_until_the_checker_accepts_one(
    dialect: Dialect,
) -> None:
    client, transport = await connected_client(dialect)
    for number in range(3):
        transport.server_push({"id": "x", "type": dialect.result, "payload": {"n": number}})

    assert await client.wait_response(lambda payload: payload["n"] == 2) == {"n": 2}


# ---- gqlws.testing.GraphqlWsClient ------------------------------------------------------


async def test_assert_no_messages_ignores_keepalives_and_fails_on_a_real_message(
    dialect: Dialect,
) -> None:
    transport = FakeTransport(dialect.subprotocol, graphql_server(dialect))
    client = testing.GraphqlWsClient(transport)
    await client.connect_and_init()
    keepalive = {"type": "ka"} if dialect is GRAPHQL_WS else {"type": "ping"}
    transport.server_push(keepalive)

    await client.assert_no_messages(timeout=NOTHING_LEFT)

    transport.server_push({"id": "x", "type": dialect.result, "payload": {"n": 1}})
    with pytest.raises(AssertionError, match="Nothing expected"):
        await client.assert_no_messages("Nothing expected", timeout=WAIT)
    # The offending message is still there to be inspected.
    assert await client.receive(wait_id="x") == {"n": 1}
