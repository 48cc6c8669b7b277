"""Let Daphne send the close codes and reasons gqlws uses.

Daphne (4.2) closes a WebSocket through Autobahn's ``sendClose``, which
accepts only 1000 and 3000-4999 and raises on anything else, and it drops
the ASGI ``reason``. RFC 6455 lets a server send the registered codes gqlws
relies on (1008 policy violation, 1009 message too big, 1012 service
restart, 1013 try again later), and the graphql-transport-ws spec wants its
reasons read. So, in a Daphne process, gqlws sends the close frame itself
for those codes, with the reason, through Autobahn's lower-level
``sendCloseFrame``; everything else goes to Daphne unchanged.

Applied when the consumer module is imported in a process where Daphne's
protocol module is loaded (the ``daphne`` command and ``runserver`` load it
before the application), and idempotent.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["patch_daphne"]

#: Codes a server may send (RFC 6455 section 7.4): 1000-1003, 1007-1014, 3000-4999.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})


def _utf8_truncated(reason: str, limit: int = 123) -> bytes:
    return reason.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def patch_daphne() -> bool:
    """Patch Daphne's WebSocket protocol if it is loaded; True if it is (now) patched."""
    module = sys.modules.get("daphne.ws_protocol")
    if module is None:
        return False
    protocol = module.WebSocketProtocol
    if getattr(protocol, "_gqlws_close_patch", False):
        return True
    original = protocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> Any:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            code = message.get("code") or 1000
            if code in _SENDABLE:
                reason = message.get("reason") or ""
                self.sendCloseFrame(
                    code=int(code), reasonUtf8=_utf8_truncated(reason) or None, isReply=False
                )
                return None
        return original(self, message)

    protocol.handle_reply = handle_reply
    protocol._gqlws_close_patch = True
    return True
