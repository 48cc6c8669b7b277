"""A client that never reads: the edge's memory stays bounded, other clients are unaffected.

Over a real Daphne process: the slow client is a raw socket that completes
the WebSocket handshake, subscribes, and then never reads again, while a
second client sends ~25 MB of notifications through the chat.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import gqlws
from tests.processes import ServerProcess

SUBSCRIBE = 'subscription { onChatMessage(chatroom: "slow") { text } }'
SEND = 'mutation($t: String!) { sendChatMessage(chatroom: "slow", text: $t) { ok } }'


def _frame(message: dict[str, Any]) -> bytes:
    """One masked text frame, as a client must send it."""
    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_raw_subscriber(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /subscriptions/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert b" 101 " in response.split(b"\r\n")[0]
    sock.sendall(_frame({"type": "connection_init"}))
    sock.sendall(_frame({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
    # A tiny receive buffer: the kernel absorbs little, the server must hold the rest.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_client_that_never_reads_is_dropped_and_memory_stays_bounded(
    daphne_server: ServerProcess,
) -> None:
    url = f"ws://127.0.0.1:{daphne_server.port}/subscriptions/"
    reader = gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
    sender = gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
    slow: socket.socket | None = None
    text = "x" * 65536

    async def chat(count: int) -> None:
        for index in range(count):
            await sender.execute(SEND, {"t": f"{index} {text}"})
            received = await sub.next(timeout=30)
            assert received["data"]["onChatMessage"]["text"].startswith(f"{index} ")

    try:
        await reader.connect_and_init()
        await sender.connect_and_init()
        sub = await reader.subscribe(SUBSCRIBE, wait_confirmation=False)
        await reader.execute("{ hello }")  # the subscription is registered by now
        await chat(400)  # the edge's allocator reaches its working size
        baseline = _rss_kib(daphne_server.pid)
        slow = _open_raw_subscriber(daphne_server.port)
        await reader.execute("{ hello }")
        await chat(1600)  # ~100 MiB for every subscriber, the slow one included
        growth_mib = (_rss_kib(daphne_server.pid) - baseline) / 1024
        # Without the bound the edge holds all of it, and copies: 179 MiB measured.
        assert growth_mib < 80, f"edge grew by {growth_mib:.0f} MiB"
        # The server dropped the slow client: reading now hits the end of the stream.
        assert slow is not None
        slow.settimeout(10)
        with_end = False
        try:
            while slow.recv(1 << 20):
                pass
            with_end = True
        except ConnectionResetError:
            with_end = True
        assert with_end
    finally:
        if slow is not None:
            slow.close()
        await reader.finalize()
        await sender.finalize()


async def test_a_flood_of_ten_thousand_messages_is_cut_off_and_memory_stays_bounded(
    daphne_server: ServerProcess,
) -> None:
    url = f"ws://127.0.0.1:{daphne_server.port}/graphql/"
    bystander = gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url))
    await bystander.connect_and_init()
    try:
        baseline = _rss_kib(daphne_server.pid)
        flood = socket.create_connection(("127.0.0.1", daphne_server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        flood.sendall(
            (
                f"GET /graphql/ HTTP/1.1\r\nHost: 127.0.0.1:{daphne_server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )
        subscribe = {"id": "x", "type": "subscribe", "payload": {"query": "{ hello }"}}
        burst = _frame({"type": "connection_init"}) + b"".join(
            _frame({**subscribe, "id": str(index)}) for index in range(10_000)
        )
        try:
            flood.sendall(burst)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server mid-flood: what should happen
        flood.settimeout(10)
        data = b""
        try:
            while chunk := flood.recv(1 << 16):
                data += chunk
        except ConnectionResetError:
            pass
        flood.close()
        # The server's close frame: opcode 0x88, length 21, code 1008 and its reason.
        assert b"\x88\x15\x03\xf0Rate limit exceeded" in data
        assert await bystander.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
        growth_mib = (_rss_kib(daphne_server.pid) - baseline) / 1024
        assert growth_mib < 32, f"edge grew by {growth_mib:.0f} MiB"
    finally:
        await bystander.finalize()
