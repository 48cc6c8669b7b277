"""The legacy ``graphql-ws`` subprotocol (Apollo's subscriptions-transport-ws).

Client -> server: ``connection_init``, ``start``, ``stop``,
``connection_terminate``. Server -> client: ``connection_ack``,
``connection_error``, ``ka``, ``data``, ``error``, ``complete``.

Unlike ``graphql-transport-ws`` this protocol reports bad messages with an
``error`` message and keeps the socket open, so one malformed frame costs
the client nothing else. Two of its habits are kept for compatibility:

* Apollo's client sends ``start`` right after ``connection_init`` without
  waiting for the ack, so starts that arrive while the connection hook runs
  are held and released, in order, once the connection is acknowledged.
* A ``start`` with the id of a running operation replaces that operation.

``stop`` is answered with ``complete`` (as django-channels-graphql-ws does),
so a client always learns that the operation has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import (
    Action,
    Authorize,
    CloseCode,
    ConnectionState,
    OperationPayload,
    ProtocolError,
    ProtocolSession,
    Send,
    Start,
    Stop,
    decode_frame,
    parse_operation_payload,
)

__all__ = ["SUBPROTOCOL", "LegacyWsSession"]

SUBPROTOCOL = "graphql-ws"


def _error(message: str, op_id: str | None = None) -> Send:
    frame: dict[str, Any] = {"type": "error", "payload": {"message": message}}
    if op_id is not None:
        frame["id"] = op_id
    return Send(frame)


@dataclass(slots=True)
class LegacyWsSession(ProtocolSession):
    """Protocol state of one legacy ``graphql-ws`` connection."""

    subprotocol: str = SUBPROTOCOL
    result_type = "data"
    #: Starts received while the connection hook runs, released on ack (a
    #: tuple: the empty one, shared, once acknowledged).
    held: tuple[tuple[str, OperationPayload], ...] = ()

    def receive(self, text: str | None = None, data: bytes | None = None) -> list[Action]:
        if self.state is ConnectionState.CLOSED:
            return []
        try:
            message = decode_frame(text, data)
        except ProtocolError as error:
            return [_error(str(error))]
        op_id = message.get("id")
        if op_id is not None and not isinstance(op_id, str):
            return [_error("Message 'id' must be a string")]
        try:
            return self._dispatch(message["type"], op_id, message)
        except ProtocolError as error:
            return [_error(str(error), op_id)]

    def _dispatch(self, kind: str, op_id: str | None, message: dict[str, Any]) -> list[Action]:
        if kind == "connection_init":
            if self.state is not ConnectionState.NEW:
                raise ProtocolError("Too many initialisation requests")
            self.state = ConnectionState.AUTHORIZING
            # The payload is whatever the client sent: django-channels-graphql-ws's
            # client sends "", Apollo's an object; on_connect sees it unchanged.
            return [Authorize(message.get("payload"))]
        if kind == "connection_terminate":
            return self._close(CloseCode.NORMAL, "Connection terminated by the client")
        if kind == "start":
            if op_id is None:
                raise ProtocolError("'start' message must have an 'id'")
            payload = parse_operation_payload(message.get("payload"))
            return self._start(op_id, payload)
        if kind == "stop":
            if op_id is None:
                raise ProtocolError("'stop' message must have an 'id'")
            return self._stop(op_id)
        raise ProtocolError(f"Invalid message type: '{kind}'")

    def _start(self, op_id: str, payload: OperationPayload) -> list[Action]:
        if self.state is ConnectionState.NEW:
            raise ProtocolError("Connection is not initialised: send 'connection_init' first")
        if self.state is ConnectionState.AUTHORIZING:
            self.held = (*((i, p) for i, p in self.held if i != op_id), (op_id, payload))
            return []
        actions: list[Action] = []
        if op_id in self.operations:
            actions.append(Stop(op_id))  # the new start replaces the running one
        self.operations.add(op_id)
        actions.append(Start(op_id, payload))
        return actions

    def _stop(self, op_id: str) -> list[Action]:
        held = tuple((i, p) for i, p in self.held if i != op_id)
        if len(held) != len(self.held):
            self.held = held
            return [Send({"id": op_id, "type": "complete"})]
        if not self._end(op_id):
            return []  # already over: its complete was sent when it ended
        return [Stop(op_id), Send({"id": op_id, "type": "complete"})]

    def accept_connection(self, payload: dict[str, Any] | None = None) -> list[Action]:
        if self.state is not ConnectionState.AUTHORIZING:
            return []
        self.state = ConnectionState.ACKNOWLEDGED
        ack: dict[str, Any] = {"type": "connection_ack"}
        if payload:
            ack["payload"] = payload
        actions: list[Action] = [Send(ack)]
        held, self.held = self.held, ()
        for op_id, op_payload in held:
            actions.extend(self._start(op_id, op_payload))
        return actions

    def reject_connection(self, message: str) -> list[Action]:
        if self.state is ConnectionState.CLOSED:
            return []
        self.held = ()
        error = Send({"type": "connection_error", "payload": {"message": message}})
        return [error, *self._close(CloseCode.FORBIDDEN, "Forbidden")]

    def next(self, op_id: str, result: dict[str, Any]) -> list[Action]:
        if op_id not in self.operations:
            return []
        return [Send({"id": op_id, "type": "data", "payload": result})]

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> list[Action]:
        # Requests that fail before execution answer like executed ones that
        # failed: ``data`` with ``errors`` then ``complete``. Apollo's legacy
        # client and django-channels-graphql-ws clients both read errors there.
        if op_id not in self.operations:
            return []
        return [*self.next(op_id, {"data": None, "errors": errors}), *self.complete(op_id)]

    def complete(self, op_id: str) -> list[Action]:
        if not self._end(op_id):
            return []
        return [Send({"id": op_id, "type": "complete"})]

    def keepalive(self) -> list[Action]:
        if self.state is not ConnectionState.ACKNOWLEDGED:
            return []
        return [Send({"type": "ka"})]
