"""The transport contract of the Python client: how frames travel, not what they mean.

``GraphqlWsClient`` speaks GraphQL over WebSocket; a *transport* only moves
JSON messages over one WebSocket. Keeping the two apart lets the same client
run over aiohttp in production (``GraphqlWsTransportAiohttp``) and over
Channels' in-process ``WebsocketCommunicator`` in tests
(``gqlws.testing.GraphqlWsTransport``), and lets a test script a fake server
in a dozen lines.

A transport is driven like this::

    transport = GraphqlWsTransportAiohttp("ws://localhost:8000/graphql/")
    await transport.connect()               # handshake, subprotocol negotiated
    assert transport.subprotocol in ("graphql-transport-ws", "graphql-ws")
    await transport.send({"type": "connection_init"})
    message = await transport.receive()     # {"type": "connection_ack"}
    await transport.disconnect()

What every implementation must guarantee (the client relies on each point):

* ``receive`` returns text frames decoded from JSON, in arrival order, and
  raises ``asyncio.TimeoutError`` when nothing arrives in time. A timeout
  must leave the connection usable: the client polls with short timeouts.
* Once the server closed the socket, ``receive`` first returns the frames
  that arrived before the close, then raises ``GraphqlWsConnectionClosed``
  with the close code, on that call and on every later one.
* ``receive`` may be cancelled without losing a frame (the client cancels
  reads when a caller's deadline passes).
* ``wait_disconnect`` waits for the server's close without consuming frames.

The interface is the one of django-channels-graphql-ws, so transports written
for it keep working; ``subprotocol``, ``close_code`` and ``close_reason`` are
additions with ``None`` defaults.
"""

from __future__ import annotations

import abc
from typing import Any

__all__ = [
    "DEFAULT_SUBPROTOCOLS",
    "GraphqlWsConnectionClosed",
    "GraphqlWsHandshakeError",
    "GraphqlWsTransport",
]

#: Subprotocols offered in the handshake, in order of preference. The
#: current GraphQL over WebSocket spec first; the legacy Apollo protocol
#: (subscriptions-transport-ws) for servers that speak only that.
DEFAULT_SUBPROTOCOLS: tuple[str, ...] = ("graphql-transport-ws", "graphql-ws")


class GraphqlWsConnectionClosed(ConnectionError):
    """The server closed the WebSocket; ``code`` and ``reason`` say why.

    ``code`` is ``None`` when the connection was lost without a close frame.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)

    def __str__(self) -> str:
        text = f"WebSocket closed by the server with code {self.code}"
        return f"{text}: {self.reason}" if self.reason else text


class GraphqlWsHandshakeError(ConnectionError):
    """The WebSocket could not be opened, or opened with a subprotocol we can't speak.

    ``code`` is the close code when the server refused the handshake by
    closing, ``subprotocol`` what the server chose when that is the problem.
    """

    def __init__(
        self, message: str, *, code: int | None = None, subprotocol: str | None = None
    ) -> None:
        self.code = code
        self.subprotocol = subprotocol
        super().__init__(message)


class GraphqlWsTransport(abc.ABC):
    """Transport interface for ``GraphqlWsClient``: one WebSocket carrying JSON messages.

    Every ``timeout`` argument is in seconds; ``None`` means ``TIMEOUT``.
    See the module docstring for the guarantees an implementation owes.
    """

    #: Default timeout for the handshake, each receive and the close, in seconds.
    TIMEOUT: float = 60.0

    @abc.abstractmethod
    async def connect(self, timeout: float | None = None) -> None:
        """Open the WebSocket, offering the subprotocols given to the constructor.

        Raises ``GraphqlWsHandshakeError`` when the server refuses the
        connection or picks a subprotocol that was not offered.
        """

    @abc.abstractmethod
    async def send(self, message: dict[str, Any]) -> None:
        """Send ``message`` as one JSON text frame.

        Raises ``GraphqlWsConnectionClosed`` when the socket is already closed.
        """

    async def send_text(self, text: str) -> None:
        """Send ``text`` as one text frame, unchecked: for tests of malformed input."""
        raise NotImplementedError(f"{type(self).__name__} cannot send raw text")

    @abc.abstractmethod
    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """Return the next message from the server.

        Raises ``asyncio.TimeoutError`` when none arrives within ``timeout``,
        ``GraphqlWsConnectionClosed`` once the server closed the socket and
        every frame sent before the close has been returned.
        """

    @abc.abstractmethod
    async def disconnect(self, timeout: float | None = None) -> None:
        """Close the WebSocket (code 1000) and release everything the transport holds.

        Safe to call more than once, and after the server closed the socket.
        """

    async def wait_disconnect(self, timeout: float | None = None) -> None:
        """Wait until the server closes the WebSocket, keeping unread frames for ``receive``.

        Raises ``asyncio.TimeoutError`` if the socket is still open after
        ``timeout``.
        """
        # Not abstract: transports written for the reference library may lack it.
        raise NotImplementedError(f"{type(self).__name__} cannot wait for a disconnect")

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose in the handshake, ``None`` before ``connect``."""
        return None

    @property
    def close_code(self) -> int | None:
        """The close code sent by the server, ``None`` while the socket is open."""
        return None

    @property
    def close_reason(self) -> str | None:
        """The close reason sent by the server, ``None`` while the socket is open."""
        return None
