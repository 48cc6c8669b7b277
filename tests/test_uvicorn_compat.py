"""Under uvicorn, an open WebSocket no longer holds its handshake's headers.

Against a real uvicorn process (its default WebSocket protocol,
``websockets-sansio``): a tests-project field counts the non-empty
websockets header collections alive in the server.
"""

from __future__ import annotations

import gqlws
from tests.processes import ServerProcess


async def test_an_open_websocket_holds_no_handshake_headers(uvicorn_server: ServerProcess) -> None:
    # Without the release, uvicorn keeps each open connection's handshake
    # request and response, and websockets' parser the request too: two
    # header collections per connection (~3.5 KiB).
    url = f"ws://127.0.0.1:{uvicorn_server.port}/graphql/"
    clients = [gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url)) for _ in range(5)]
    try:
        for client in clients:
            await client.connect_and_init()
        result = await clients[0].execute("{ handshakeHeadersAlive }")
    finally:
        for client in clients:
            await client.finalize()
    assert result["data"] == {"handshakeHeadersAlive": 0}
