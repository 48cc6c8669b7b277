"""Let Daphne send the close codes and reasons gqlws uses.

Daphne (4.2) closes a WebSocket through Autobahn's ``sendClose``, which
accepts only 1000 and 3000-4999 and raises on anything else, and it drops
the ASGI ``reason``. RFC 6455 lets a server send the registered codes gqlws
relies on (1008 policy violation, 1009 message too big, 1012 service
restart, 1013 try again later), and the graphql-transport-ws spec wants its
reasons read. So, in a Daphne process, gqlws sends the close frame itself
for those codes, with the reason, through Autobahn's lower-level
``sendCloseFrame``; everything else goes to Daphne unchanged.

Second, a bound on what Daphne buffers for a client that does not read.
ASGI gives an application no backpressure: Daphne queues every frame in
Twisted's transport, which grows without limit under a client that never
reads. The patch drops such a connection (an abort: a close frame would
wait behind the very buffer it is about) once more than
``GQLWS["MAX_SEND_BUFFER"]`` bytes wait for it; the client sees the
connection lost, reconnects and resumes from its last position. Under
servers that apply backpressure themselves (uvicorn), the consumer's own
notification queue bound applies instead.

Applied when the consumer module is imported in a process where Daphne's
protocol module is loaded (the ``daphne`` command and ``runserver`` load it
before the application), and idempotent.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["patch_daphne"]

LOG = logging.getLogger(__name__)

_limits: dict[str, int] = {"max_send_buffer": 4 << 20}

#: Codes a server may send (RFC 6455 section 7.4): 1000-1003, 1007-1014, 3000-4999.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})


def _buffered(transport: Any) -> int:
    """Bytes a Twisted transport holds for its peer (0 if it cannot tell)."""
    try:
        return int(transport._tempDataLen) + len(transport.dataBuffer) - int(transport.offset)
    except (AttributeError, TypeError):
        return 0


def _utf8_truncated(reason: str, limit: int = 123) -> bytes:
    return reason.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def patch_daphne(max_send_buffer: int | None = None) -> bool:
    """Patch Daphne's WebSocket protocol if it is loaded; True if it is (now) patched."""
    if max_send_buffer is not None:
        _limits["max_send_buffer"] = max_send_buffer
    module = sys.modules.get("daphne.ws_protocol")
    if module is None:
        return False
    protocol = module.WebSocketProtocol
    if getattr(protocol, "_gqlws_close_patch", False):
        return True
    original = protocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> Any:
        kind = message.get("type")
        if kind == "websocket.close" and self.state != self.STATE_CONNECTING:
            code = message.get("code") or 1000
            if code in _SENDABLE:
                reason = message.get("reason") or ""
                self.sendCloseFrame(
                    code=int(code), reasonUtf8=_utf8_truncated(reason) or None, isReply=False
                )
                return None
        result = original(self, message)
        if kind == "websocket.send":
            limit = _limits["max_send_buffer"]
            buffered = _buffered(getattr(self, "transport", None))
            if limit and buffered > limit:
                LOG.warning(
                    "Dropping a client that does not read: %d bytes buffered (limit %d)",
                    buffered,
                    limit,
                )
                self.transport.abortConnection()
        return result

    protocol.handle_reply = handle_reply
    protocol._gqlws_close_patch = True
    return True
