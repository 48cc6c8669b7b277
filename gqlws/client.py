"""A GraphQL-over-WebSocket client that speaks both subprotocols and loses no message.

The shortest path::

    transport = GraphqlWsTransportAiohttp("ws://localhost:8000/graphql/")
    client = GraphqlWsClient(transport)
    await client.connect_and_init()
    result = await client.execute("query { users { id } }")   # {"data": {...}}
    sub = await client.subscribe("subscription { onMessage { text } }")
    async for event in sub:                                  # each notification
        ...
    await sub.complete()
    await client.finalize()

**Subprotocols.** The transport offers ``graphql-transport-ws`` (the current
spec) and ``graphql-ws`` (legacy Apollo subscriptions-transport-ws); the
client reads which one the server chose and frames accordingly: ``subscribe``
or ``start`` to begin an operation, ``next`` or ``data`` for its results,
``complete`` or ``stop`` to cancel it. ``send`` and ``receive`` stay raw: they
move messages exactly as given, for tests that speak the protocol by hand.

**Demultiplexing.** One socket carries the messages of many operations. The
client reads frames in one place (``_pump_until``) and files each into a
buffer scanned in arrival order; whoever waits for operation ``X`` takes the
oldest message of ``X`` and leaves the others for their owners. So a
notification that arrives while ``execute`` waits for its own result is kept
for the subscription it belongs to. (The reference client skipped such
messages, which made tests flaky whenever a notification raced a query.)
Only one coroutine reads the transport at a time; the others wait for it to
file a frame and then look again, so operations may be awaited from
concurrent tasks. Keepalives (``ka``), ``ping`` (answered with ``pong`` at
once) and ``pong`` are handled while filing and never returned. The buffer is
unbounded: a subscription nobody reads keeps its notifications in memory.

**Finished operations.** Once the client is done with an operation (it
completed a subscription, or an operation failed), frames still in flight for
it are dropped on arrival instead of lingering in the buffer: servers differ
on whether ``complete`` follows ``error`` or ``stop``, and the client should
not care.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import textwrap
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from .transport import GraphqlWsConnectionClosed, GraphqlWsTransport

__all__ = [
    "AUTO",
    "ClientSubscription",
    "GraphqlWsClient",
    "GraphqlWsConnectionRejected",
    "GraphqlWsProtocolError",
    "GraphqlWsResponseError",
]

LOG = logging.getLogger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"

#: Per subprotocol: (begin an operation, one result, cancel an operation).
_FRAMING: dict[str, tuple[str, str, str]] = {
    TRANSPORT_WS: ("subscribe", "next", "complete"),
    GRAPHQL_WS: ("start", "data", "stop"),
}

#: How many finished operation ids to remember for dropping their late frames.
_FORGET_AFTER = 1024


class _Auto(enum.Enum):
    AUTO = "AUTO"


#: "Generate an id": the default of ``send(msg_id=...)``, where ``None`` means "no id".
AUTO: Literal[_Auto.AUTO] = _Auto.AUTO


class GraphqlWsResponseError(Exception):
    """The server answered with GraphQL errors; ``response`` is the whole message."""

    def __init__(self, response: dict[str, Any], message: str | None = None) -> None:
        super().__init__(response, message)
        self.response = response
        self.message = message

    def __str__(self) -> str:
        return f"{self.message or 'Error in GraphQL response'}: {self.response}!"


class GraphqlWsConnectionRejected(ConnectionError):
    """The server refused ``connection_init``.

    On ``graphql-ws`` it says so with ``connection_error`` (its ``payload`` is
    kept here); on ``graphql-transport-ws`` it closes the socket, typically
    with 4403 (``code`` and ``reason`` are kept here).
    """

    def __init__(
        self, *, payload: Any = None, code: int | None = None, reason: str | None = None
    ) -> None:
        self.payload = payload
        self.code = code
        self.reason = reason
        detail = f"payload {payload!r}" if code is None else f"close code {code} {reason or ''}"
        super().__init__(f"Server rejected the connection: {detail.strip()}")


class GraphqlWsProtocolError(Exception):
    """The server sent a message the protocol does not allow at this point."""

    def __init__(self, text: str, received: dict[str, Any] | None = None) -> None:
        self.received = received
        super().__init__(text if received is None else f"{text} Received: {received}")


def _has_errors(payload: Any) -> bool:
    return isinstance(payload, dict) and bool(payload.get("errors"))


class GraphqlWsClient:
    """Client of a GraphQL WebSocket server; see the module docstring for the model.

    Args:
        transport: moves the frames, e.g. ``GraphqlWsTransportAiohttp``.
        subprotocol: only for transports that do not report the negotiated
            subprotocol (written for the reference library): the one to frame
            messages with. Otherwise the transport's choice is used.
    """

    AUTO = AUTO

    def __init__(self, transport: GraphqlWsTransport, subprotocol: str | None = None) -> None:
        if not isinstance(transport, GraphqlWsTransport):
            raise TypeError("The transport must implement the 'GraphqlWsTransport' interface!")
        self._transport = transport
        self._requested_subprotocol = subprotocol
        self._subprotocol: str | None = None
        self._is_connected = False
        self._buffer: deque[dict[str, Any]] = deque()
        # Ids of finished operations whose late frames are dropped (ordered, bounded).
        self._finished: dict[str, None] = {}
        self._pongs = 0
        # Set while one coroutine reads the transport; the others wait on `_filed`.
        self._reading = False
        self._filed = asyncio.Event()

    # ---- State -------------------------------------------------------------

    @property
    def transport(self) -> GraphqlWsTransport:
        """Underlying network transport."""
        return self._transport

    @property
    def connected(self) -> bool:
        """Whether the client is connected (and initialised, unless ``connect_only``)."""
        return self._is_connected

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol in use, known once connected."""
        return self._subprotocol

    # ---- Connection ---------------------------------------------------------

    async def connect_and_init(self, connect_only: bool = False, payload: Any = None) -> None:
        """Open the socket, send ``connection_init`` with ``payload`` and await the ack.

        With ``connect_only`` the socket is opened and nothing is sent.
        Raises ``GraphqlWsConnectionRejected`` when the server refuses the
        connection, ``GraphqlWsProtocolError`` on anything but an ack.
        """
        await self._transport.connect()
        self._subprotocol = self._negotiated_subprotocol()
        if connect_only:
            self._is_connected = True
            return
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None or self._subprotocol == GRAPHQL_WS:
            # The legacy protocol's servers read `payload` unconditionally.
            init["payload"] = payload if payload is not None else {}
        await self._transport.send(init)
        try:
            answer = await self._take(lambda m: True, None, "connection_ack")
        except GraphqlWsConnectionClosed as closed:
            raise GraphqlWsConnectionRejected(code=closed.code, reason=closed.reason) from closed
        if answer.get("type") == "connection_error":
            raise GraphqlWsConnectionRejected(payload=answer.get("payload"))
        if answer.get("type") != "connection_ack":
            raise GraphqlWsProtocolError("Expected 'connection_ack'.", answer)
        self._is_connected = True

    async def finalize(self) -> None:
        """Say goodbye (``connection_terminate`` on graphql-ws) and close the socket."""
        if self._is_connected and self._subprotocol == GRAPHQL_WS:
            try:
                await self._transport.send({"type": "connection_terminate"})
            except GraphqlWsConnectionClosed:
                pass  # The server closed first: nothing left to say goodbye to.
        self._is_connected = False
        await self._transport.disconnect()

    async def wait_disconnect(self, timeout: float | None = None) -> None:
        """Wait until the server closes the socket (``asyncio.TimeoutError`` if it does not)."""
        await self._transport.wait_disconnect(timeout)
        self._is_connected = False

    async def ping(
        self, payload: dict[str, Any] | None = None, timeout: float | None = None
    ) -> None:
        """Send ``ping`` and wait for a ``pong`` (graphql-transport-ws only)."""
        if self._subprotocol != TRANSPORT_WS:
            raise GraphqlWsProtocolError(f"Subprotocol {self._subprotocol!r} has no ping.")
        target = self._pongs + 1
        await self.send(msg_id=None, msg_type="ping", payload=payload)
        await self._pump_until(lambda: self._pongs >= target, timeout, "pong")

    # ---- Raw messages -------------------------------------------------------

    async def send(
        self,
        *,
        msg_id: str | Literal[_Auto.AUTO] | None = AUTO,
        msg_type: str | None = None,
        payload: Any = None,
    ) -> str | None:
        """Send a raw message and return its id; fields that are ``None`` are left out.

        ``msg_id`` defaults to a fresh uuid4 hex; pass ``None`` for no id.
        """
        if msg_id is AUTO:
            msg_id = uuid.uuid4().hex
        message: dict[str, Any] = {}
        if msg_id is not None:
            message["id"] = str(msg_id)
        if msg_type is not None:
            message["type"] = msg_type
        if payload is not None:
            message["payload"] = payload
        await self._transport.send(message)
        return msg_id

    async def receive(
        self,
        *,
        wait_id: str | None = None,
        assert_id: str | None = None,
        assert_type: str | None = None,
        raw_response: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Return the payload of the next message (the whole message with ``raw_response``).

        With ``wait_id`` the next message *of that operation*; messages of
        other operations stay buffered for their own readers. Without it, the
        oldest message of any operation. ``assert_id`` / ``assert_type`` raise
        ``AssertionError`` when the message differs. Raises
        ``GraphqlWsResponseError`` on an ``error`` message or a payload with
        non-empty ``errors``; ``asyncio.TimeoutError`` after ``timeout``
        (default: the transport's ``TIMEOUT``).
        """
        match = (lambda m: True) if wait_id is None else (lambda m: m.get("id") == wait_id)
        message = await self._take(match, timeout, f"a message for {wait_id or 'any id'}")
        if assert_type is not None and message.get("type") != assert_type:
            raise AssertionError(
                f"Type `{assert_type}` expected, but `{message.get('type')}` received!"
                f" Response: {message}."
            )
        if assert_id is not None and message.get("id") != assert_id:
            raise AssertionError(f"Id `{assert_id}` expected! Response: {message}.")
        payload = message.get("payload")
        if message.get("type") == "error" or _has_errors(payload):
            raise GraphqlWsResponseError(message)
        return message if raw_response else payload

    async def receive_next(self, op_id: str) -> Any:
        """Payload of the next result of ``op_id`` (``next`` or ``data``)."""
        return await self.receive(wait_id=op_id, assert_type=self._framing[1])

    async def receive_complete(self, op_id: str) -> None:
        """Consume the ``complete`` of ``op_id``."""
        await self.receive(wait_id=op_id, assert_type="complete")

    async def wait_response(
        self, response_checker: Callable[[Any], bool], timeout: float | None = None
    ) -> Any:
        """Return the first payload for which ``response_checker`` is true, dropping others.

        Raises ``asyncio.TimeoutError`` when none arrives within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._transport.TIMEOUT if timeout is None else timeout)
        while True:
            payload = await self.receive(timeout=max(0.0, deadline - loop.time()))
            if response_checker(payload):
                return payload

    # ---- Operations ---------------------------------------------------------

    async def start(
        self,
        query: str,
        *,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        msg_id: str | Literal[_Auto.AUTO] = AUTO,
        extensions: dict[str, Any] | None = None,
    ) -> str:
        """Begin an operation (``subscribe`` / ``start``) and return its id; read results yourself.

        The query is dedented, so it may be written indented in the caller.
        """
        payload: dict[str, Any] = {"query": textwrap.dedent(query), "variables": variables or {}}
        if operation_name is not None:
            payload["operationName"] = operation_name
        if extensions:
            payload["extensions"] = extensions
        op_id = await self.send(msg_id=msg_id, msg_type=self._framing[0], payload=payload)
        assert op_id is not None  # `send` only returns None for msg_id=None.
        return op_id

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> dict[str, Any]:
        """Run a query or mutation and return its result payload, e.g. ``{"data": {...}}``.

        Consumes the ``complete`` that ends the operation. Raises
        ``GraphqlWsResponseError`` when the result carries errors or the
        server answers ``error``.
        """
        op_id = await self.start(query, variables=variables, operation_name=operation_name)
        what = f"the result of {op_id}"
        message = await self._take(lambda m: m.get("id") == op_id, None, what)
        kind = message.get("type")
        if kind == "complete":
            raise GraphqlWsProtocolError(f"Operation {op_id} completed without a result.", message)
        if kind == "error" or _has_errors(message.get("payload")):
            self._forget(op_id)
            raise GraphqlWsResponseError(message)
        if kind != self._framing[1]:
            self._forget(op_id)
            raise GraphqlWsProtocolError(f"Unexpected message for {op_id}.", message)
        ending = await self._take(lambda m: m.get("id") == op_id, None, f"complete of {op_id}")
        if ending.get("type") != "complete":
            self._forget(op_id)
            raise GraphqlWsProtocolError(
                f"Operation {op_id} sent more than one result: use subscribe().", ending
            )
        result: dict[str, Any] = message.get("payload") or {}
        return result

    async def subscribe(
        self,
        query: str,
        *,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        wait_confirmation: bool = True,
        resume: ClientSubscription | list[dict[str, Any]] | None = None,
    ) -> ClientSubscription:
        """Start a subscription and return it: a ``str`` (its id) you can iterate.

        With ``wait_confirmation`` the first result of the operation, the
        server's confirmation (``{"data": null}`` by default), is awaited and
        consumed; a first result carrying errors is a refusal and raises
        ``GraphqlWsResponseError``. Use this when the server confirms
        subscriptions and you must not race the activation.
        """
        positions = resume.positions if isinstance(resume, ClientSubscription) else resume
        extensions = {"gqlws": {"resume": list(positions)}} if positions else None
        op_id = await self.start(
            query, variables=variables, operation_name=operation_name, extensions=extensions
        )
        subscription = ClientSubscription(op_id, self)
        if wait_confirmation:
            await subscription._consume_confirmation()
        return subscription

    async def complete(self, op_id: str) -> None:
        """Ask the server to stop ``op_id`` (``complete`` / ``stop``); raw: frames still
        arriving for it stay readable. ``ClientSubscription.complete`` drops them."""
        await self._transport.send({"type": self._framing[2], "id": str(op_id)})

    # ---- Demultiplexing -------------------------------------------------------

    @property
    def _framing(self) -> tuple[str, str, str]:
        if self._subprotocol is None:
            raise GraphqlWsProtocolError("Not connected: call connect_and_init() first.")
        return _FRAMING[self._subprotocol]

    def _negotiated_subprotocol(self) -> str:
        chosen = self._transport.subprotocol
        requested = self._requested_subprotocol
        if chosen is None:
            chosen = requested
        elif requested is not None and requested != chosen:
            raise GraphqlWsProtocolError(f"Server chose {chosen!r}, the client {requested!r}.")
        if chosen not in _FRAMING:
            raise GraphqlWsProtocolError(
                f"Cannot speak subprotocol {chosen!r}; supported: {', '.join(_FRAMING)}."
            )
        return chosen

    def _forget(self, op_id: str) -> None:
        """Done with ``op_id``: drop its buffered frames and the ones still in flight."""
        self._buffer = deque(m for m in self._buffer if m.get("id") != op_id)
        self._finished[op_id] = None
        if len(self._finished) > _FORGET_AFTER:
            del self._finished[next(iter(self._finished))]

    async def _take(
        self, match: Callable[[dict[str, Any]], bool], timeout: float | None, what: str
    ) -> dict[str, Any]:
        """Remove and return the oldest buffered message ``match`` accepts, reading as needed."""
        found: list[dict[str, Any]] = []

        def pop_match() -> bool:
            for index, message in enumerate(self._buffer):
                if match(message):
                    del self._buffer[index]
                    found.append(message)
                    return True
            return False

        await self._pump_until(pop_match, timeout, what)
        return found[0]

    async def _pump_until(
        self, ready: Callable[[], bool], timeout: float | None, what: str
    ) -> None:
        """Read and file frames until ``ready()``; ``asyncio.TimeoutError`` after ``timeout``."""
        loop = asyncio.get_running_loop()
        budget = self._transport.TIMEOUT if timeout is None else timeout
        deadline = loop.time() + budget
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"No {what} within {budget} s.")
            if self._reading:
                # Another coroutine is reading: let it file the frame, then look again.
                filed = self._filed
                try:
                    await asyncio.wait_for(filed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass  # Checked at the top of the loop, with the message.
                continue
            self._reading = True
            try:
                frame = await self._transport.receive(timeout=remaining)
                await self._file(frame)
            except (asyncio.TimeoutError, TimeoutError):
                # The deadline check above reports it. (Two names on Python 3.10.)
                pass
            except GraphqlWsConnectionClosed:
                self._is_connected = False
                raise
            finally:
                self._reading = False
                # Wake every waiter (a new Event for the next round), even on
                # failure: one of them becomes the reader and sees the error itself.
                filed, self._filed = self._filed, asyncio.Event()
                filed.set()

    async def _file(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ka" and self._subprotocol == GRAPHQL_WS:
            return
        if kind == "ping" and self._subprotocol == TRANSPORT_WS:
            # "The receiver must respond with a Pong as soon as possible."
            await self._transport.send({"type": "pong"})
            return
        if kind == "pong" and self._subprotocol == TRANSPORT_WS:
            self._pongs += 1
            return
        op_id = frame.get("id")
        if isinstance(op_id, str) and op_id in self._finished:
            LOG.debug("Dropping a frame of finished operation %s: %s", op_id, frame)
            if kind in ("complete", "error"):
                del self._finished[op_id]  # Nothing follows these.
            return
        self._buffer.append(frame)


class ClientSubscription(str):
    """A running subscription: equal to its operation id, and an async iterator of results.

    ``async for payload in sub`` yields each notification's payload and stops
    when the server completes the operation. A payload with errors raises
    ``GraphqlWsResponseError`` (iterate again to go on); an ``error`` message
    raises it and ends the subscription. Each wait is bounded by the
    transport's ``TIMEOUT``; use ``next(timeout=...)`` for other bounds.
    """

    _client: GraphqlWsClient
    _ended: bool
    _positions: dict[str, dict[str, Any]]

    def __new__(cls, op_id: str, client: GraphqlWsClient) -> ClientSubscription:
        subscription = super().__new__(cls, op_id)
        subscription._client = client
        subscription._ended = False
        subscription._positions = {}
        return subscription

    @property
    def positions(self) -> list[dict[str, Any]]:
        """The last position seen per group: pass it as ``resume=`` to a new subscription.

        A gqlws server marks each notification with its place in its group's
        stream (``extensions.gqlws``); a client that lost its connection
        resubscribes with these and receives what it missed, in order, within
        the server's history window.
        """
        return list(self._positions.values())

    @property
    def id(self) -> str:
        """The operation id, as a plain ``str``."""
        return str(self)

    @property
    def ended(self) -> bool:
        """Whether the server or the client completed the subscription."""
        return self._ended

    def __aiter__(self) -> ClientSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.next()

    async def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next notification payload; ``StopAsyncIteration`` once completed."""
        if self._ended:
            raise StopAsyncIteration
        message = await self._receive(timeout)
        if _has_errors(message.get("payload")):
            raise GraphqlWsResponseError(message)
        payload: dict[str, Any] = message.get("payload") or {}
        extensions = payload.get("extensions")
        if isinstance(extensions, dict) and isinstance(extensions.get("gqlws"), dict):
            # The stream position is for the client to keep, not for the caller.
            position = extensions["gqlws"]
            self._positions[str(position.get("group"))] = position
            rest = {key: value for key, value in extensions.items() if key != "gqlws"}
            payload = {key: value for key, value in payload.items() if key != "extensions"}
            if rest:
                payload["extensions"] = rest
        return payload

    async def complete(self) -> None:
        """Stop the subscription; frames still in flight for it are dropped. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._client._forget(self.id)
        if self._client.connected:
            try:
                await self._client.complete(self.id)
            except GraphqlWsConnectionClosed:
                pass  # The server closed the socket: every operation is over anyway.

    async def _consume_confirmation(self) -> None:
        try:
            message = await self._receive(None)
        except StopAsyncIteration:
            return  # Completed at once (e.g. not a subscription): iteration yields nothing.
        payload = message.get("payload")
        if isinstance(payload, dict) and payload.get("errors"):
            # Not a confirmation: the legacy protocol reports a refused
            # subscription as a result with errors (then completes it).
            self._ended = True
            self._client._forget(self.id)
            raise GraphqlWsResponseError(message)

    async def _receive(self, timeout: float | None) -> dict[str, Any]:
        """The next result message, ending the subscription on ``complete`` or ``error``."""
        client = self._client
        message = await client._take(lambda m: m.get("id") == self, timeout, f"result of {self}")
        kind = message.get("type")
        if kind == "complete":
            self._ended = True
            raise StopAsyncIteration
        if kind == "error":
            self._ended = True
            client._forget(self.id)
            raise GraphqlWsResponseError(message)
        if kind != client._framing[1]:
            raise GraphqlWsProtocolError(f"Unexpected message for subscription {self}.", message)
        return message
