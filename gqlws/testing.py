"""Test your GraphQL WebSocket API in-process, the way gqlws tests its own.

``GraphqlWsTransport`` runs the client over Channels' ``WebsocketCommunicator``:
no server, no network, the ASGI application runs in the test's event loop.
``GraphqlWsClient`` adds assertions that tests need::

    from gqlws.testing import GraphqlWsClient, GraphqlWsTransport

    async def test_hello():
        transport = GraphqlWsTransport(MyGraphqlWsConsumer.as_asgi(), path="graphql/")
        client = GraphqlWsClient(transport)
        await client.connect_and_init()
        assert await client.execute("query { hello }") == {"data": {"hello": "world"}}
        await client.assert_no_messages()
        await client.finalize()     # waits for the application to finish

To test the legacy protocol, offer only it:
``GraphqlWsTransport(app, subprotocols=["graphql-ws"])``. Headers and other
communicator arguments go in ``communicator_kwds``, e.g.
``{"headers": [(b"cookie", b"sessionid=...")]}``.

One difference from ``WebsocketCommunicator.receive_output`` matters here:
a receive that times out leaves the application running (the communicator
would cancel it), because the client polls with short timeouts, e.g. in
``assert_no_messages``. If the application crashes, the next receive raises
its exception, so a server-side traceback fails the test where it happened.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from typing import Any

from channels.testing import WebsocketCommunicator

from . import client as _client
from . import transport as _transport

__all__ = ["GraphqlWsClient", "GraphqlWsTransport"]


class GraphqlWsTransport(_transport.GraphqlWsTransport):
    """Client transport over ``channels.testing.WebsocketCommunicator``.

    Args:
        application: the ASGI application, e.g. ``MyConsumer.as_asgi()`` or a
            ``URLRouter``.
        path: the request path given to the application.
        communicator_kwds: more ``WebsocketCommunicator`` arguments (``headers``...).
        subprotocols: offered in the handshake, in order of preference.
        subprotocol: the reference library's spelling: offer only this one.
    """

    # Generous for slow CI machines, short enough that a hung test says so.
    TIMEOUT: float = 10.0

    def __init__(
        self,
        application: Any,
        path: str = "graphql/",
        communicator_kwds: dict[str, Any] | None = None,
        subprotocols: Sequence[str] = _transport.DEFAULT_SUBPROTOCOLS,
        *,
        subprotocol: str | None = None,
    ) -> None:
        if subprotocol is not None:
            subprotocols = (subprotocol,)
        elif isinstance(subprotocols, str):
            subprotocols = (subprotocols,)  # A lone name, not a sequence of letters.
        self._subprotocols = tuple(subprotocols)
        self._comm = WebsocketCommunicator(
            application, path, subprotocols=list(self._subprotocols), **(communicator_kwds or {})
        )
        # Frames read while waiting for the close, returned by `receive` first.
        self._pending: deque[dict[str, Any]] = deque()
        self._subprotocol: str | None = None
        self._closed = False
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._disconnected = False

    @property
    def communicator(self) -> WebsocketCommunicator:
        """The underlying communicator, for what the transport does not cover."""
        return self._comm

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    async def connect(self, timeout: float | None = None) -> None:
        """Run the handshake; ``GraphqlWsHandshakeError`` if the application refuses it."""
        accepted, detail = await self._comm.connect(self._budget(timeout))
        if not accepted:
            self._closed, self._close_code = True, detail
            raise _transport.GraphqlWsHandshakeError(
                f"The application rejected the WebSocket handshake with close code {detail}.",
                code=detail,
            )
        if detail not in self._subprotocols:
            await self.disconnect(timeout)
            what = "no subprotocol" if detail is None else f"subprotocol {detail!r}"
            raise _transport.GraphqlWsHandshakeError(
                f"The application chose {what}, "
                f"not one of those offered: {', '.join(self._subprotocols)}.",
                subprotocol=detail,
            )
        self._subprotocol = detail

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        if self._closed:
            raise _transport.GraphqlWsConnectionClosed(self._close_code, self._close_reason or "")
        # Not `send_to`: it refuses an empty string, which tests may want to send.
        await self._comm.send_input({"type": "websocket.receive", "text": text})

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        if self._pending:
            return self._pending.popleft()
        deadline = asyncio.get_running_loop().time() + self._budget(timeout)
        while True:
            message = await self._next_frame(deadline)
            if message is not None:
                return message

    async def disconnect(self, timeout: float | None = None) -> None:
        """Disconnect and wait for the application to finish (its exceptions surface here)."""
        if self._disconnected:
            return
        self._disconnected = True
        await self._comm.disconnect(code=1000, timeout=self._budget(timeout))

    async def wait_disconnect(self, timeout: float | None = None) -> None:
        deadline = asyncio.get_running_loop().time() + self._budget(timeout)
        while not self._closed:
            message = await self._next_frame(deadline, keep_close=True)
            if message is not None:
                self._pending.append(message)

    def _budget(self, timeout: float | None) -> float:
        return self.TIMEOUT if timeout is None else timeout

    async def _next_frame(self, deadline: float, keep_close: bool = False) -> dict[str, Any] | None:
        """One output of the application: a message, ``None`` for a non-frame output.

        Raises ``GraphqlWsConnectionClosed`` on the close (unless ``keep_close``,
        which only records it) and on every call after it.
        """
        if self._closed:
            if keep_close:
                return None
            raise _transport.GraphqlWsConnectionClosed(self._close_code, self._close_reason or "")
        output = await self._output(deadline)
        kind = output.get("type")
        if kind == "websocket.close":
            self._closed = True
            self._close_code = output.get("code", 1000)
            self._close_reason = output.get("reason") or ""
            if keep_close:
                return None
            raise _transport.GraphqlWsConnectionClosed(self._close_code, self._close_reason)
        if kind != "websocket.send":
            return None  # Nothing else carries a frame; nothing else is expected either.
        text = output.get("text")
        if text is None:
            text = output["bytes"].decode("utf-8")
        message = json.loads(text)
        if not isinstance(message, dict):
            raise ValueError(
                f"The application sent a JSON {type(message).__name__}, not an object."
            )
        return message

    async def _output(self, deadline: float) -> dict[str, Any]:
        """Wait for the application's next output, or its end, until ``deadline``."""
        queue = self._comm.output_queue
        if not queue.empty():
            output: dict[str, Any] = queue.get_nowait()
            return output
        application = self._comm.future
        remaining = deadline - asyncio.get_running_loop().time()
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait(
                {getter, application},
                timeout=max(0.0, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            # Cancelling a pending `Queue.get` leaves the item in the queue.
            getter.cancel()
        if getter.done() and not getter.cancelled():
            output = getter.result()
            return output
        if application.done():
            application.result()  # Raises the application's exception, if any.
            # No close frame: 1006, "abnormal closure", as a browser would report it.
            reason = "The application finished without closing the socket."
            return {"type": "websocket.close", "code": 1006, "reason": reason}
        raise asyncio.TimeoutError("The application sent nothing in time.")


class GraphqlWsClient(_client.GraphqlWsClient):
    """``gqlws.client.GraphqlWsClient`` with assertions for tests."""

    async def assert_no_messages(
        self, error_message: str | None = None, timeout: float = 0.1
    ) -> None:
        """Fail (``AssertionError``) if a message is buffered or arrives within ``timeout``.

        Keepalives, pings and pongs do not count. The offending message stays
        buffered, so the test can still inspect it with ``receive()``.
        """
        try:
            await self._pump_until(lambda: bool(self._buffer), timeout, "message")
        except asyncio.TimeoutError:
            return
        text = error_message or "Message received when nothing expected!"
        raise AssertionError(f"{text}\n{self._buffer[0]}")

    async def wait_disconnect(
        self, timeout: float | None = None, assert_code: int | None = None
    ) -> None:
        """Wait until the server closes the socket; with ``assert_code``, check the code."""
        await super().wait_disconnect(timeout)
        code = self.transport.close_code
        if assert_code is not None and code != assert_code:
            raise AssertionError(
                f"The connection was closed with code {code}, expected {assert_code}."
            )

    async def send_raw_message(self, message: dict[str, Any]) -> None:
        """Send ``message`` exactly as given, e.g. to test how the server treats garbage."""
        await self.transport.send(message)
