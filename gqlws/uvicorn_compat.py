"""Under uvicorn, let go of a WebSocket's handshake headers once it is open.

uvicorn's default WebSocket protocol (``websockets-sansio``) keeps the
handshake request and response for as long as the connection is open, and
websockets' parser keeps the request too (a local of its generator, which
runs until the connection closes). Their headers are the bulk of it: ~3.5
KiB per connection (tracemalloc), held after uvicorn has copied the request
headers into the ASGI scope and sent the response. Once the handshake is
complete (the application accepted), nothing reads them again, so the patch
empties both header collections.

Applied, like ``gqlws.daphne_compat``, when the consumer module is imported
in a process where that uvicorn module is loaded (``uvicorn`` loads it
before the application) and again at each connection; idempotent. Other
uvicorn WebSocket implementations (``--ws websockets``, ``wsproto``) are
left as they are.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["patch_uvicorn"]

_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"


def _release_handshake(protocol: Any) -> None:
    """Empty the headers of an open connection's handshake request and response."""
    if getattr(protocol, "handshake_complete", False) is not True:
        return
    for message in (getattr(protocol, "request", None), getattr(protocol, "response", None)):
        headers = getattr(message, "headers", None)
        clear = getattr(headers, "clear", None)
        if callable(clear):
            clear()


def patch_uvicorn() -> bool:
    """Patch uvicorn's sans-I/O WebSocket protocol if it is loaded; True if it is (now) patched."""
    module = sys.modules.get(_MODULE)
    protocol = getattr(module, "WebSocketsSansIOProtocol", None)
    if protocol is None:
        return False
    if getattr(protocol, "_gqlws_handshake_patch", False):
        return True
    original = protocol.send

    async def send(self: Any, message: Any) -> None:
        await original(self, message)
        if message.get("type") == "websocket.accept":
            _release_handshake(self)

    protocol.send = send
    protocol._gqlws_handshake_patch = True
    return True
