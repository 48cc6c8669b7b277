"""Fuzzing both subprotocols: whatever arrives, nothing escapes and others are served.

Two levels: the pure sessions (fast, many examples) must answer every frame
with well-formed actions and never raise; the consumer, in process, must
survive random frame sequences, huge frames and floods, close with a
protocol code when it closes, and keep serving a fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gqlws.protocol import (
    Authorize,
    Close,
    ConnectionState,
    LegacyWsSession,
    Send,
    Start,
    Stop,
    TransportWsSession,
)

TYPES = [
    "connection_init",
    "connection_terminate",
    "ping",
    "pong",
    "subscribe",
    "start",
    "stop",
    "complete",
    "next",
    "data",
    "error",
    "ka",
    "bogus",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | json_values,
        "id": st.sampled_from(["1", "2", ""]) | json_values,
        "payload": st.fixed_dictionaries(
            {},
            optional={
                "query": st.sampled_from(["{ hello }", "{ nope", ""]) | json_values,
                "variables": json_values,
                "operationName": json_values,
            },
        )
        | json_values,
    },
)
frames = st.one_of(
    messages.map(json.dumps),
    json_values.map(json.dumps),
    st.text(alphabet=string.printable, max_size=50),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([TransportWsSession, LegacyWsSession]), st.lists(frames, max_size=15))
def test_sessions_answer_any_frames_with_well_formed_actions(
    kind: type, sequence: list[str]
) -> None:
    session = kind()
    closed = False
    for index, frame in enumerate(sequence):
        actions = session.receive(frame)
        if index % 3 == 0 and session.state is ConnectionState.AUTHORIZING:
            actions += session.accept_connection()
        for action in actions:
            assert isinstance(action, (Send, Close, Authorize, Start, Stop))
            if isinstance(action, Send):
                json.dumps(action.message)  # always sendable
                assert isinstance(action.message.get("type"), str)
            if isinstance(action, Close):
                assert 1000 <= action.code <= 4999
                closed = True
        if closed:
            assert session.state is ConnectionState.CLOSED
            assert session.receive('{"type": "ping"}') == []


async def _serves_a_fresh_connection(application: Any, subprotocol: str) -> None:
    communicator = WebsocketCommunicator(application, "graphql/", subprotocols=[subprotocol])
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "connection_init", "payload": {}})
    assert (await communicator.receive_json_from(5))["type"] == "connection_ack"
    kind = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
    await communicator.send_json_to({"id": "x", "type": kind, "payload": {"query": "{ hello }"}})
    assert (await communicator.receive_json_from(5))["payload"] == {
        "data": {"hello": "Hello, world!"}
    }
    await communicator.disconnect()


async def _drain(communicator: WebsocketCommunicator) -> int | None:
    """Read everything the server sends; the close code if it closed."""
    while True:
        try:
            # Not receive_output(timeout): its timeout cancels the application.
            output = await asyncio.wait_for(communicator.output_queue.get(), 0.3)
        except asyncio.TimeoutError:
            return None
        if output["type"] == "websocket.close":
            return int(output.get("code", 1000))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(["graphql-transport-ws", "graphql-ws"]), st.lists(frames, max_size=12))
def test_the_consumer_survives_random_frames_and_keeps_serving(
    subprotocol: str, sequence: list[str]
) -> None:
    from tests.asgi import application

    async def scenario() -> None:
        communicator = WebsocketCommunicator(application, "graphql/", subprotocols=[subprotocol])
        assert (await communicator.connect())[0]
        for frame in sequence:
            await communicator.send_input({"type": "websocket.receive", "text": frame})
        code = await _drain(communicator)
        assert code is None or code in {1000, 4400, 4401, 4403, 4409, 4429}
        await communicator.disconnect()  # raises if the application crashed
        await _serves_a_fresh_connection(application, subprotocol)

    asyncio.run(scenario())


async def test_huge_frames_and_floods_close_only_the_offending_connection() -> None:
    from tests.asgi import application

    for subprotocol in ("graphql-transport-ws", "graphql-ws"):
        huge = WebsocketCommunicator(application, "graphql/", subprotocols=[subprotocol])
        assert (await huge.connect())[0]
        await huge.send_to(text_data="x" * (2 << 20))
        assert await _drain(huge) == 1009
        await huge.disconnect()

        flood = WebsocketCommunicator(application, "graphql/", subprotocols=[subprotocol])
        assert (await flood.connect())[0]
        await flood.send_json_to({"type": "connection_init", "payload": {}})
        for _ in range(10_000):
            await flood.send_to(text_data='{"type": "pong"}')
        assert await _drain(flood) == 1008  # the rate limit
        await flood.disconnect()
        await _serves_a_fresh_connection(application, subprotocol)
