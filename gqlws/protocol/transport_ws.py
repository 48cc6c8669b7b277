"""The ``graphql-transport-ws`` subprotocol (the GraphQL over WebSocket spec).

Client -> server: ``connection_init``, ``ping``, ``pong``, ``subscribe``,
``complete``. Server -> client: ``connection_ack``, ``ping``, ``pong``,
``next``, ``error``, ``complete``. Anything else, or a known type of the
wrong shape, closes the socket with 4400; the other close codes are those of
``CloseCode``, each applied exactly where the spec says.

A query or mutation yields one ``next`` then ``complete``; a subscription
yields many ``next``; a request that fails before execution (it does not
parse or validate) yields a single ``error`` and nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import (
    Action,
    Authorize,
    CloseCode,
    ConnectionState,
    ProtocolError,
    ProtocolSession,
    Send,
    Start,
    Stop,
    decode_frame,
    parse_operation_payload,
)

__all__ = ["SUBPROTOCOL", "TransportWsSession"]

SUBPROTOCOL = "graphql-transport-ws"


def _optional_object(message: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = message.get(key)
    if value is not None and not isinstance(value, dict):
        raise ProtocolError(f"'{message['type']}' message '{key}' must be an object")
    return value


def _operation_id(message: dict[str, Any]) -> str:
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id:
        raise ProtocolError(f"'{message['type']}' message must have a non-empty string 'id'")
    return op_id


@dataclass(slots=True)
class TransportWsSession(ProtocolSession):
    """Protocol state of one ``graphql-transport-ws`` connection."""

    subprotocol: str = SUBPROTOCOL

    def receive(self, text: str | None = None, data: bytes | None = None) -> list[Action]:
        if self.state is ConnectionState.CLOSED:
            return []
        try:
            message = decode_frame(text, data)
            return self._dispatch(message)
        except ProtocolError as error:
            return self._close(CloseCode.BAD_REQUEST, f"Invalid message received: {error}")

    def _dispatch(self, message: dict[str, Any]) -> list[Action]:
        kind = message["type"]
        if kind == "connection_init":
            payload = _optional_object(message, "payload")
            if self.state is not ConnectionState.NEW:
                return self._close(
                    CloseCode.TOO_MANY_INITIALISATION_REQUESTS, "Too many initialisation requests"
                )
            self.state = ConnectionState.AUTHORIZING
            return [Authorize(payload if payload is not None else {})]
        if kind == "ping":
            # "The Ping message can be sent at any time within the established
            # socket" and "the receiver must respond with a Pong as soon as possible".
            _optional_object(message, "payload")
            return [Send({"type": "pong"})]
        if kind == "pong":
            _optional_object(message, "payload")
            return []
        if kind == "subscribe":
            op_id = _operation_id(message)
            operation = parse_operation_payload(message.get("payload"))
            if self.state is not ConnectionState.ACKNOWLEDGED:
                return self._close(CloseCode.UNAUTHORIZED, "Unauthorized")
            if op_id in self.operations:
                return self._close(
                    CloseCode.SUBSCRIBER_ALREADY_EXISTS, f"Subscriber for {op_id} already exists"
                )
            self.operations.add(op_id)
            return [Start(op_id, operation)]
        if kind == "complete":
            op_id = _operation_id(message)
            # A complete for an unknown id is not an error: it races with the
            # server's own completion of the same operation.
            return [Stop(op_id)] if self._end(op_id) else []
        raise ProtocolError(f"Unexpected message of type '{kind}'")

    def accept_connection(self, payload: dict[str, Any] | None = None) -> list[Action]:
        if self.state is not ConnectionState.AUTHORIZING:
            return []
        self.state = ConnectionState.ACKNOWLEDGED
        ack: dict[str, Any] = {"type": "connection_ack"}
        if payload:
            ack["payload"] = payload
        return [Send(ack)]

    def reject_connection(self, message: str) -> list[Action]:
        return self._close(CloseCode.FORBIDDEN, "Forbidden")

    def next(self, op_id: str, result: dict[str, Any]) -> list[Action]:
        if op_id not in self.operations:
            return []
        return [Send({"id": op_id, "type": "next", "payload": result})]

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> list[Action]:
        if not self._end(op_id):
            return []
        return [Send({"id": op_id, "type": "error", "payload": errors})]

    def complete(self, op_id: str) -> list[Action]:
        if not self._end(op_id):
            return []
        return [Send({"id": op_id, "type": "complete"})]

    def keepalive(self) -> list[Action]:
        if self.state is ConnectionState.CLOSED:
            return []
        return [Send({"type": "ping"})]
