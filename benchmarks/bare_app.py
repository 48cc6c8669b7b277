"""The ceiling: a bare ASGI WebSocket app that answers the benchmark's frames with no work.

No Django, no Channels, no GraphQL. It speaks just enough of both
subprotocols (``graphql-transport-ws`` and legacy ``graphql-ws``) for the
load generator's frames to get answers of the same shape gqlws gives:

* ``connection_init`` gets ``connection_ack``; ``ping`` gets ``pong``;
* a query (any begin frame whose document is neither the subscription nor
  the mutation) gets its precomputed result (``{"data": {"history": []}}``,
  or ``{"data": {"me": null}}`` for ``{ me }``), then ``complete``;
* a subscription (``onNewChatMessage`` or ``onChatFeed``) puts the
  connection in a set per room and answers nothing (gqlws's example does not
  confirm either); notifications carry that subscription's field;
* the ``sendChatMessage`` mutation gets its precomputed result and
  ``complete``, then the same notification frame gqlws would send (chat
  text, and the position in ``extensions.gqlws``) is pushed straight to every
  subscriber of the room, in subscription order, before the next frame of
  the sender is read. So order holds by construction and nothing is lost.

Served by the same server as gqlws, in the same run, it measures what the
server, the machine and the load generator allow; the runner divides gqlws's
numbers by these::

    python -m daphne -b 127.0.0.1 -p 8001 benchmarks.bare_app:application
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.frames import (
    BEGIN,
    CANCEL,
    PROTOCOLS,
    QUERIES,
    RESULT,
    SUBSCRIPTIONS,
    TRANSPORT_WS,
)

__all__ = ["application"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_QUERY_PAYLOAD = json.dumps({"data": {"history": []}}, separators=(",", ":"))
#: Fixed answers by document; any other query gets ``_QUERY_PAYLOAD``.
_ANSWERS = {QUERIES["me"][0]: json.dumps({"data": {"me": None}}, separators=(",", ":"))}
_MUTATION_PAYLOAD = json.dumps({"data": {"sendChatMessage": {"ok": True}}}, separators=(",", ":"))
_EPOCH = uuid.uuid4().hex
_GROUP_PREFIX = "example.schema.OnNewChatMessage/"


class _Connection:
    """One socket: its subprotocol, its ASGI ``send`` and its subscriptions."""

    __slots__ = ("protocol", "send", "subscriptions")

    def __init__(self, protocol: str, send: Send) -> None:
        self.protocol = protocol
        self.send = send
        self.subscriptions: dict[str, str] = {}  # operation id -> room

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def answer(self, operation_id: str, payload: str) -> None:
        """A result, then ``complete``, as both subprotocols end a single-result operation."""
        op = json.dumps(operation_id)
        await self.send_text(f'{{"id":{op},"type":"{RESULT[self.protocol]}","payload":{payload}}}')
        await self.send_text(f'{{"id":{op},"type":"complete"}}')


class _Rooms:
    """Subscribers per room, and each room's next notification offset."""

    def __init__(self) -> None:
        # Dicts keep insertion order: notifications go out in subscription order.
        self.subscribers: dict[str, dict[tuple[int, str], _Connection]] = {}
        self.offsets: dict[str, int] = {}
        #: The subscription field of each room's notifications.
        self.fields: dict[str, str] = {}

    def add(self, room: str, field: str, connection: _Connection, operation_id: str) -> None:
        self.fields[room] = field
        self.subscribers.setdefault(room, {})[(id(connection), operation_id)] = connection
        connection.subscriptions[operation_id] = room

    def remove(self, connection: _Connection, operation_id: str) -> None:
        room = connection.subscriptions.pop(operation_id, None)
        if room is not None:
            self.subscribers.get(room, {}).pop((id(connection), operation_id), None)

    async def broadcast(self, room: str, text: str) -> None:
        """Push one notification to every subscriber of ``room``, frame encoded once."""
        offset = self.offsets.get(room, 0) + 1
        self.offsets[room] = offset
        payload = json.dumps(
            {
                "data": {self.fields.get(room, "onNewChatMessage"): {"text": text}},
                "extensions": {
                    "gqlws": {"group": _GROUP_PREFIX + room, "epoch": _EPOCH, "offset": offset}
                },
            },
            separators=(",", ":"),
        )
        frames: dict[tuple[str, str], str] = {}
        for (_, operation_id), connection in list(self.subscribers.get(room, {}).items()):
            key = (operation_id, connection.protocol)
            frame = frames.get(key)
            if frame is None:
                op = json.dumps(operation_id)
                kind = RESULT[connection.protocol]
                frame = frames[key] = f'{{"id":{op},"type":"{kind}","payload":{payload}}}'
            await connection.send_text(frame)


_ROOMS = _Rooms()


async def _serve(connection: _Connection, receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            continue
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "connection_init":
            await connection.send_text('{"type":"connection_ack"}')
        elif kind == "ping":
            await connection.send_text('{"type":"pong"}')
        elif kind == BEGIN[connection.protocol]:
            await _begin(connection, frame["id"], frame.get("payload") or {})
        elif kind == CANCEL[connection.protocol]:
            _ROOMS.remove(connection, frame["id"])
        elif kind == "connection_terminate":
            await connection.send({"type": "websocket.close", "code": 1000})
            return


async def _begin(connection: _Connection, operation_id: str, payload: dict[str, Any]) -> None:
    query = payload.get("query", "")
    variables = payload.get("variables") or {}
    subscribed = next((f for _, f in SUBSCRIPTIONS.values() if f in query), None)
    if subscribed is not None:
        _ROOMS.add(variables["r"], subscribed, connection, operation_id)
    elif "sendChatMessage" in query:
        await connection.answer(operation_id, _MUTATION_PAYLOAD)
        await _ROOMS.broadcast(variables["r"], variables["t"])
    else:
        await connection.answer(operation_id, _ANSWERS.get(query, _QUERY_PAYLOAD))


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI entry point: WebSockets on any path; HTTP gets 404."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["type"] != "websocket":
        return
    if (await receive())["type"] != "websocket.connect":
        return
    offered = scope.get("subprotocols") or []
    # Like gqlws: graphql-transport-ws whenever it is offered, else graphql-ws.
    chosen = (
        TRANSPORT_WS
        if TRANSPORT_WS in offered
        else next((p for p in PROTOCOLS if p in offered), None)
    )
    if chosen is None:
        await send({"type": "websocket.close", "code": 4406})
        return
    await send({"type": "websocket.accept", "subprotocol": chosen})
    connection = _Connection(chosen, send)
    try:
        await _serve(connection, receive)
    finally:
        for operation_id in list(connection.subscriptions):
            _ROOMS.remove(connection, operation_id)
