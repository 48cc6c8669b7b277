"""What the consumer does with operations: threads, loop, middleware, context, ordering.

Run over both subprotocols and both ways of connecting (communicator, Daphne).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
import pytest
from channels.testing import WebsocketCommunicator

from tests.conftest import Connect

_ids = itertools.count()


class Conn:
    """Just enough of a client to send requests and read their results by id."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.legacy = transport.subprotocol == "graphql-ws"

    @classmethod
    async def open(cls, connect: Connect, subprotocol: str, path: str = "graphql/") -> Conn:
        conn = cls(await connect(path, [subprotocol]))
        await conn.transport.send({"type": "connection_init", "payload": {}})
        assert (await conn.transport.receive())["type"] == "connection_ack"
        return conn

    async def start(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = f"op{next(_ids)}"
        kind = "start" if self.legacy else "subscribe"
        payload = {"query": query, "variables": variables}
        await self.transport.send({"id": op_id, "type": kind, "payload": payload})
        return op_id

    async def next_result(self) -> tuple[str, dict[str, Any]]:
        """The next (id, payload) of a result; its complete is consumed."""
        while True:
            message = await self.transport.receive()
            if message["type"] in ("data", "next"):
                return message["id"], message["payload"]

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        op_id = await self.start(query, variables)
        got_id, payload = await self.next_result()
        assert got_id == op_id
        return payload


async def test_sync_resolvers_run_in_the_worker_threads_and_async_ones_on_the_loop(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol)
    payload = await conn.execute("{ threadName loopThreadName }")
    assert payload["data"]["threadName"].startswith("gqlws")
    assert not payload["data"]["loopThreadName"].startswith("gqlws")


async def test_sync_and_async_resolvers_both_answer(connect: Connect, subprotocol: str) -> None:
    conn = await Conn.open(connect, subprotocol)
    payload = await conn.execute('{ hello(name: "a") asyncHello(name: "b") }')
    assert payload == {"data": {"hello": "Hello, a!", "asyncHello": "Hello, b!"}}


async def test_sync_and_async_middleware_wrap_every_resolver(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol, "graphql-middleware/")
    payload = await conn.execute("{ hello asyncHello }")
    # tag_middleware upper-cases the argument, async_middleware appends "?" to the result.
    assert payload == {"data": {"hello": "Hello, WORLD!?", "asyncHello": "Hello, WORLD!?"}}


async def test_a_middleware_manager_of_objects_and_functions_is_accepted(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol, "graphql-manager/")
    payload = await conn.execute('{ hello(name: "x") }')
    # ExclaimMiddleware runs inside tag_middleware: "x" -> "X" -> "X!!".
    assert payload == {"data": {"hello": "Hello, X!!!"}}


async def test_context_stored_by_a_resolver_persists_for_the_connection_only(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol)
    before = await conn.execute('{ contextValue(key: "fortytwo") }')
    assert before == {"data": {"contextValue": None}}
    mutation = 'mutation { setContext(key: "fortytwo", value: "42") { ok } }'
    assert await conn.execute(mutation) == {"data": {"setContext": {"ok": True}}}
    after = await conn.execute('{ contextValue(key: "fortytwo") }')
    assert after == {"data": {"contextValue": "42"}}
    other = await Conn.open(connect, subprotocol)
    assert await other.execute('{ contextValue(key: "fortytwo") }') == {
        "data": {"contextValue": None}
    }


async def test_context_knows_the_operation_id(connect: Connect, subprotocol: str) -> None:
    conn = await Conn.open(connect, subprotocol)
    op_id = await conn.start("{ operationId }")
    got_id, payload = await conn.next_result()
    assert got_id == op_id and payload == {"data": {"operationId": op_id}}


@pytest.mark.parametrize("field", ["sleep", "asyncSleep"])
async def test_requests_on_one_connection_run_concurrently(
    connect: Connect, subprotocol: str, field: str
) -> None:
    conn = await Conn.open(connect, subprotocol)
    started = time.monotonic()
    await conn.start(f'{{ {field}(seconds: 0.5, tag: "a") }}')
    await conn.start(f'{{ {field}(seconds: 0.5, tag: "b") }}')
    await conn.next_result()
    await conn.next_result()
    elapsed = time.monotonic() - started
    # About 0.5 s when both run at once; strictly one after the other would be 1 s.
    assert elapsed < 0.9, elapsed


@pytest.mark.parametrize("field", ["sleep", "asyncSleep"])
async def test_strict_ordering_runs_requests_one_at_a_time_in_order(
    connect: Connect, subprotocol: str, field: str
) -> None:
    conn = await Conn.open(connect, subprotocol, "graphql-strict/")
    started = time.monotonic()
    first = await conn.start(f'{{ {field}(seconds: 0.5, tag: "first") }}')
    second = await conn.start(f'{{ {field}(seconds: 0.05, tag: "second") }}')
    order = [(await conn.next_result())[0], (await conn.next_result())[0]]
    elapsed = time.monotonic() - started
    assert order == [first, second]
    assert elapsed >= 0.55, elapsed


async def test_without_strict_ordering_a_short_request_overtakes_a_long_one(
    connect: Connect, subprotocol: str
) -> None:
    conn = await Conn.open(connect, subprotocol)
    first = await conn.start('{ sleep(seconds: 0.5, tag: "first") }')
    second = await conn.start('{ sleep(seconds: 0.01, tag: "second") }')
    order = [(await conn.next_result())[0], (await conn.next_result())[0]]
    assert order == [second, first]


async def test_a_slow_sync_resolver_does_not_block_other_connections(
    connect: Connect, subprotocol: str
) -> None:
    slow = await Conn.open(connect, subprotocol)
    fast = await Conn.open(connect, subprotocol)
    await slow.start("{ sleep(seconds: 1.5) }")
    started = time.monotonic()
    assert await fast.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
    assert time.monotonic() - started < 1.0


async def test_a_client_offering_no_known_subprotocol_is_closed_with_4406_and_a_reason(
    daphne_server: Any,
) -> None:
    from tests.asgi import application

    communicator = WebsocketCommunicator(application, "graphql/", subprotocols=["mqtt"])
    connected, _ = await communicator.connect()
    assert connected
    explanation = await communicator.receive_json_from()
    assert explanation["type"] == "error"
    assert "graphql-transport-ws" in explanation["payload"]["message"]
    closing = await communicator.receive_output()
    assert closing["type"] == "websocket.close" and closing["code"] == 4406
    assert "graphql-transport-ws" in closing["reason"] and "graphql-ws" in closing["reason"]
    await communicator.wait()

    url = f"ws://127.0.0.1:{daphne_server.port}/graphql/"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        text = await ws.receive(timeout=5)
        assert text.type == aiohttp.WSMsgType.TEXT
        assert "Subprotocol not acceptable: offered none" in text.data
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4406


async def test_nothing_is_left_running_after_disconnect(subprotocol: str) -> None:
    from gqlws import testing
    from tests.asgi import application

    transport = testing.GraphqlWsTransport(application, "graphql/", subprotocols=[subprotocol])
    await transport.connect()
    conn = Conn(transport)
    await transport.send({"type": "connection_init", "payload": {}})
    await transport.receive()
    op_id = await conn.start("{ asyncSleep(seconds: 30) }")

    def running() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == f"operation {op_id}"]

    for _ in range(100):  # the operation's task starts on a later loop iteration
        if running():
            break
        await asyncio.sleep(0.01)
    assert running()
    await transport.disconnect()
    assert running() == []


async def _settled(condition: Any, timeout: float = 5.0) -> None:
    """Wait (up to ``timeout``) until ``condition()`` holds: tasks end a loop turn or two late."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_an_idle_subscribed_connection_keeps_no_payload_task_logger_or_empty_container(
    subprotocol: str,
) -> None:
    """What thousands of idle subscribers each hold is what memory per connection is made of."""
    from gqlws import drain, testing
    from gqlws.edge import Edge
    from tests.asgi import application

    before = set(drain._connections)
    transport = testing.GraphqlWsTransport(
        application, "subscriptions-confirm/", subprotocols=[subprotocol]
    )
    client = testing.GraphqlWsClient(transport)
    await client.connect_and_init()
    query = "subscription($room: String!) { onChatMessage(chatroom: $room) { text } }"
    subscription = await client.subscribe(query, variables={"room": f"idle-{next(_ids)}"})
    (consumer,) = set(drain._connections) - before
    operation = consumer._operations[str(subscription)]
    await _settled(lambda: operation.task is None and consumer._tasks._tasks is None)

    assert not hasattr(operation, "__dict__") and not hasattr(operation, "payload")
    assert operation.after is None and operation.settled is None
    assert consumer._ending is None and consumer._unsettled is None
    assert "_log" not in vars(consumer)  # a logger is made per record, not held
    assert consumer._outbox._frames is None and not hasattr(consumer._outbox, "__dict__")
    assert consumer._session is not None and not hasattr(consumer._session, "__dict__")
    live = operation.subscription
    assert live is not None and not hasattr(live, "__dict__")
    route = Edge.current()._routes[live.sub_id]
    assert not hasattr(route, "__dict__") and not hasattr(route.target, "__dict__")
    assert route.early is None and route.gap_checks is None and route.requested is None
    assert route.orders is not None
    assert all(order._pending is None for order in route.orders.values())
    await transport.disconnect()


async def test_a_connection_cancelled_without_a_disconnect_is_untracked_and_ticks_no_more(
    subprotocol: str,
) -> None:
    from gqlws import drain, testing
    from gqlws.keepalive import Keepalives
    from tests.asgi import application

    before = set(drain._connections)
    transport = testing.GraphqlWsTransport(
        application, "graphql-keepalive/", subprotocols=[subprotocol]
    )
    await transport.connect()
    await transport.send({"type": "connection_init", "payload": {}})
    assert (await transport.receive())["type"] == "connection_ack"
    (consumer,) = set(drain._connections) - before
    keepalives = Keepalives.of(consumer.send_keepalive_every)
    assert consumer in keepalives
    transport._comm.future.cancel()
    await _settled(lambda: transport._comm.future.done())
    assert consumer not in drain._connections
    assert consumer not in keepalives
