"""Daphne's text frames written at once: framing, order, partial writes, and when not.

In-process, over a socket pair: a Twisted TCP connection with a stand-in
reactor (which only records what Twisted registers with it) and a stand-in
for Daphne's Autobahn protocol holding the state the short path reads.
Daphne's whole path, end to end, is what every test over a real Daphne
process takes (``daphne_server``, the transport matrix, the slow client).
The HTTP request a WebSocket was upgraded from is let go: checked in a real
Daphne process.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.tcp import Connection

import gqlws
from gqlws.daphne_compat import _buffered, _send_text
from tests.processes import ServerProcess


class _Reactor:
    """What Twisted registers with its reactor: the sockets it waits to write (its names)."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.remove(writer)


def _protocol(transport: Connection, **state: Any) -> SimpleNamespace:
    defaults: dict[str, Any] = {
        "STATE_OPEN": WebSocketProtocol.STATE_OPEN,
        "SEND_STATE_GROUND": WebSocketProtocol.SEND_STATE_GROUND,
        "state": WebSocketProtocol.STATE_OPEN,
        "_perMessageCompress": None,
        "send_state": WebSocketProtocol.SEND_STATE_GROUND,
        "send_queue": deque(),
        "logFrames": False,
        "logOctets": False,
        "trackedTimings": None,
        "autoFragmentSize": 0,
        "maxMessagePayloadSize": 0,
        "transport": transport,
    }
    return SimpleNamespace(**{**defaults, **state})


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, _Reactor]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(5)
    reactor = _Reactor()
    transport = Connection(server, None, reactor)  # type: ignore[arg-type]
    transport.connected = 1
    try:
        yield transport, client, reactor
    finally:
        server.close()
        client.close()


def _receive(transport: Connection, client: socket.socket, reactor: _Reactor) -> bytes:
    """All the peer gets, Twisted writing what it holds as its reactor would."""
    received = bytearray()
    client.setblocking(False)
    while True:
        if reactor.writers:
            transport.doWrite()
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            if not reactor.writers:
                return bytes(received)
            continue
        received += chunk


def _frames(data: bytes) -> list[tuple[int, bool, str]]:
    """(first byte, masked, text) of each frame in ``data``, per RFC 6455."""
    frames = []
    while data:
        first, second = data[0], data[1]
        length, start = second & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        assert len(data) >= start + length, "a frame cut short"
        frames.append((first, bool(second & 0x80), data[start : start + length].decode()))
        data = data[start + length :]
    return frames


@pytest.mark.parametrize("length", [1, 125, 126, 65535, 65536, 200_000])
def test_a_text_frame_goes_to_the_socket_at_once_whatever_its_length(
    pair: tuple[Connection, socket.socket, _Reactor], length: int
) -> None:
    transport, client, reactor = pair
    # Two-byte characters too: the length in the header is the UTF-8 one.
    text = "é" * (length // 4) + "x" * (length - 2 * (length // 4))
    assert len(text.encode()) == length
    assert _send_text(_protocol(transport), text, Connection)
    if length <= 65536:
        # Written before the reactor ran: Twisted's own write would have
        # buffered it and registered the socket to write it on the next turn.
        assert reactor.writers == [] and _buffered(transport) == 0
    # A final text frame (0x81), unmasked (as a server's must be), the text whole.
    assert _frames(_receive(transport, client, reactor)) == [(0x81, False, text)]


def test_a_frame_behind_what_twisted_holds_is_left_to_daphne(
    pair: tuple[Connection, socket.socket, _Reactor],
) -> None:
    transport, client, reactor = pair
    transport.write(b"\x81\x05first")  # a frame from Daphne's path (a ping, say), still buffered
    # Not written ahead of it: Daphne's path queues it behind.
    assert not _send_text(_protocol(transport), "second", Connection)
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)
    assert _frames(_receive(transport, client, reactor)) == [(0x81, False, "first")]


def test_what_the_socket_does_not_take_is_left_to_twisted(
    pair: tuple[Connection, socket.socket, _Reactor],
) -> None:
    transport, client, reactor = pair
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    text = "y" * 2_000_000  # far more than the socket buffers hold
    assert _send_text(_protocol(transport), text, Connection)
    held = _buffered(transport)
    assert 0 < held < len(text) and reactor.writers == [transport]
    assert _frames(_receive(transport, client, reactor)) == [(0x81, False, text)]


@pytest.mark.parametrize(
    "state",
    [
        {"state": WebSocketProtocol.STATE_CLOSING},
        {"_perMessageCompress": object()},
        {"send_state": WebSocketProtocol.SEND_STATE_INSIDE_MESSAGE},
        {"send_queue": deque([(b"x", True)])},
        {"logFrames": True},
        {"autoFragmentSize": 4},
        {"maxMessagePayloadSize": 4},
    ],
)
def test_anything_in_the_way_leaves_the_frame_to_daphne(
    pair: tuple[Connection, socket.socket, _Reactor], state: dict[str, Any]
) -> None:
    transport, _, reactor = pair
    assert not _send_text(_protocol(transport, **state), "hello", Connection)
    assert reactor.writers == [] and _buffered(transport) == 0


def test_a_transport_that_is_not_plain_tcp_leaves_the_frame_to_daphne(
    pair: tuple[Connection, socket.socket, _Reactor],
) -> None:
    transport, _, _ = pair
    assert not _send_text(_protocol(SimpleNamespace()), "hello", Connection)  # type: ignore[arg-type]
    transport.disconnecting = True
    assert not _send_text(_protocol(transport), "hello", Connection)
    # An Autobahn without the state read: its own path, not an error.
    protocol = _protocol(transport)
    del protocol.send_queue
    transport.disconnecting = False
    assert not _send_text(protocol, "hello", Connection)


async def test_an_open_websocket_holds_no_http_request(daphne_server: ServerProcess) -> None:
    # Without the release, Twisted's HTTP channel keeps each upgraded
    # connection's request (its headers, its body buffer) until the socket
    # closes: one per open connection (~2 KiB each). Daphne itself lets go
    # of its own reference to the request within a second (its checker).
    url = f"ws://127.0.0.1:{daphne_server.port}/graphql/"
    clients = [gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url)) for _ in range(5)]
    alive = []
    try:
        for client in clients:
            await client.connect_and_init()
        for _ in range(20):
            result = await clients[0].execute("{ twistedRequestsAlive }")
            alive.append(result["data"]["twistedRequestsAlive"])
            if alive[-1] == 0:
                break
            await asyncio.sleep(0.25)
    finally:
        for client in clients:
            await client.finalize()
    assert alive[-1] == 0, f"HTTP requests alive, polled every 0.25 s: {alive}"
