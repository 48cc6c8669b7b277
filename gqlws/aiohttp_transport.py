"""``GraphqlWsTransportAiohttp``: the client transport over a real WebSocket, on aiohttp.

Usage::

    transport = GraphqlWsTransportAiohttp(
        "ws://backend.endpoint/graphql/", cookies={"sessionid": session_id}
    )
    client = GraphqlWsClient(transport)
    await client.connect_and_init()

How it works: ``connect`` opens an ``aiohttp.ClientSession`` and its
WebSocket, checks the subprotocol the server chose, and starts one reader
task. The reader is the only caller of ``ws.receive()`` (aiohttp forbids
concurrent receives): it puts every text frame into an ``asyncio.Queue`` and,
when the socket closes, records the close code and reason and puts a
sentinel behind the last frame. ``receive`` reads the queue, so frames sent
before a close are still returned, and then every call raises
``GraphqlWsConnectionClosed``. A read that times out or is cancelled loses
nothing: the frame stays in the queue.

The reader task has a done-callback that retrieves its exception (it is
logged, and ``receive`` raises ``GraphqlWsConnectionClosed`` from it), and
``disconnect`` closes the socket, then cancels and awaits the reader and
closes the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from .transport import (
    DEFAULT_SUBPROTOCOLS,
    GraphqlWsConnectionClosed,
    GraphqlWsHandshakeError,
    GraphqlWsTransport,
)

__all__ = ["GraphqlWsTransportAiohttp"]

LOG = logging.getLogger(__name__)

# Put in the queue behind the last frame once the socket is closed.
_CLOSED = object()


class GraphqlWsTransportAiohttp(GraphqlWsTransport):
    """Transport on aiohttp's WebSocket client.

    Args:
        url: the WebSocket GraphQL endpoint, e.g. ``ws://host/graphql/``.
        cookies: HTTP cookies sent with the handshake (e.g. the session id).
        headers: HTTP headers sent with the handshake.
        subprotocols: offered in the handshake, in order of preference.
    """

    def __init__(
        self,
        url: str,
        cookies: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = DEFAULT_SUBPROTOCOLS,
    ) -> None:
        self._url = url
        self._cookies = cookies
        self._headers = headers
        self._subprotocols = tuple(subprotocols)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None
        self._incoming: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._subprotocol: str | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None

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
        """Open the socket; ``GraphqlWsHandshakeError`` if refused or on an unoffered protocol."""
        if self._session is not None:
            raise RuntimeError("This transport is already connected; use a new one to reconnect.")
        self._session = aiohttp.ClientSession(cookies=self._cookies, headers=self._headers)
        try:
            ws = await asyncio.wait_for(
                self._session.ws_connect(self._url, protocols=self._subprotocols),
                self.TIMEOUT if timeout is None else timeout,
            )
        except aiohttp.WSServerHandshakeError as error:
            await self._session.close()
            raise GraphqlWsHandshakeError(
                f"Server refused the WebSocket handshake at {self._url}: {error.status} "
                f"{error.message}"
            ) from error
        except aiohttp.ClientError as error:  # Refused, unreachable, bad URL...
            await self._session.close()
            raise GraphqlWsHandshakeError(f"Could not open {self._url}: {error}") from error
        except BaseException:
            await self._session.close()
            raise
        if ws.protocol not in self._subprotocols:
            # aiohttp reports a choice outside the offer as None; the response
            # header says what the server actually picked.
            response = getattr(ws, "_response", None)
            chosen = response.headers.get("Sec-WebSocket-Protocol") if response else None
            await ws.close()
            await self._session.close()
            what = "no subprotocol" if chosen is None else f"subprotocol {chosen!r}"
            raise GraphqlWsHandshakeError(
                f"Server at {self._url} chose {what}, "
                f"not one of those offered: {', '.join(self._subprotocols)}.",
                subprotocol=chosen,
            )
        self._ws = ws
        self._subprotocol = ws.protocol
        self._reader = asyncio.create_task(self._read(ws), name=f"gqlws reader {self._url}")
        self._reader.add_done_callback(self._reader_done)

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        if self._ws is None:
            raise RuntimeError("Not connected: call connect() first.")
        if self._ws.closed or self._closed.is_set():
            raise GraphqlWsConnectionClosed(self._close_code, self._close_reason or "")
        await self._ws.send_str(text)

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        if self._reader is None:
            raise RuntimeError("Not connected: call connect() first.")
        item = await asyncio.wait_for(
            self._incoming.get(), self.TIMEOUT if timeout is None else timeout
        )
        if item is _CLOSED:
            self._incoming.put_nowait(_CLOSED)  # Every later call must see it too.
            closed = GraphqlWsConnectionClosed(self._close_code, self._close_reason or "")
            raise closed from self._reader_error
        message = json.loads(item)
        if not isinstance(message, dict):
            raise ValueError(f"Server sent a JSON {type(message).__name__}, not an object.")
        return message

    async def disconnect(self, timeout: float | None = None) -> None:
        budget = self.TIMEOUT if timeout is None else timeout
        try:
            if self._ws is not None and not self._ws.closed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._ws.close(code=1000), budget)
        finally:
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._session is not None:
                await self._session.close()
            self._closed.set()

    async def wait_disconnect(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._closed.wait(), self.TIMEOUT if timeout is None else timeout)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        """The reader task: queue text frames until the socket closes."""
        try:
            while True:
                # No receive timeout: silence is the server's business (keepalive).
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._incoming.put_nowait(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    # The protocols use text frames; accept UTF-8 JSON in binary ones too.
                    self._incoming.put_nowait(msg.data.decode("utf-8"))
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    self._close_code, self._close_reason = msg.data, msg.extra or ""
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise msg.data
                else:  # CLOSING / CLOSED: the socket is gone, maybe without a close frame.
                    break
        except Exception as error:
            # Recorded here, not only in the done-callback: `receive` may see
            # the sentinel before the callback has run.
            self._reader_error = error
            raise
        finally:
            if self._close_code is None:
                self._close_code = ws.close_code
                self._close_reason = self._close_reason or ""
            self._incoming.put_nowait(_CLOSED)
            self._closed.set()

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # Retrieved so asyncio does not report it as lost.
        if error is not None:
            LOG.warning("WebSocket reader of %s failed: %r", self._url, error)
