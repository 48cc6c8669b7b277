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

Third, a shorter path for a text frame. Daphne hands each one to Autobahn,
which frames it and hands it to Twisted, which does not write it: it
buffers it, registers the socket with epoll for writing, writes it on the
next turn of the loop and unregisters the socket (two ``epoll_ctl`` calls
and a loop callback per frame), and Autobahn formats the arguments of a
debug log line for every frame whether or not anyone logs it. Together
about half of what a notification cost an edge under Daphne (py-spy). When
nothing stands in the way (an open connection, no compression, no
fragmentation or logging of frames, nothing queued by Autobahn and nothing
buffered by Twisted), the patch frames the text itself (RFC 6455: one
unmasked final frame) and writes it to the socket at once through
Twisted's own ``writeSomeData``; what the socket does not take, or an error,
goes to Twisted's ``write`` as before, which keeps the order and handles a
lost connection. Anything else takes Daphne's path unchanged.

Fourth, the HTTP request a WebSocket was upgraded from. Daphne hands the
TCP transport to its WebSocket protocol, but Twisted's HTTP channel stays
registered as the transport's producer, holding the request, its headers
and its body buffer until the socket closes (~2 KiB per connection,
tracemalloc). Once the WebSocket is accepted, the patch unregisters the
channel and empties its request list; the upgraded request never finishes,
so that producer never paused or resumed the transport anyway.

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


def _frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of ``length`` bytes (RFC 6455 5.2)."""
    if length <= 125:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def _direct_transport(protocol: Any, length: int, connection: Any) -> Any:
    """The TCP transport a text frame of ``length`` bytes may be written to at once, or None."""
    if (
        protocol.state != protocol.STATE_OPEN
        or protocol._perMessageCompress is not None
        or protocol.send_state != protocol.SEND_STATE_GROUND
        or protocol.send_queue
        or protocol.logFrames
        or protocol.logOctets
        or protocol.trackedTimings
        or 0 < protocol.autoFragmentSize < length
        or 0 < protocol.maxMessagePayloadSize < length
    ):
        return None
    transport = getattr(protocol, "transport", None)
    if (
        not isinstance(transport, connection)
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or _buffered(transport)
    ):
        return None
    return transport


def _send_text(protocol: Any, text: str, connection: Any) -> bool:
    """Write a text frame straight to the socket; False if it must take Daphne's path."""
    payload = text.encode("utf-8")
    try:
        transport = _direct_transport(protocol, len(payload), connection)
    except AttributeError:  # an Autobahn or Twisted this was not written for: their path
        return False
    if transport is None:
        return False
    frame = _frame_header(len(payload)) + payload
    sent = transport.writeSomeData(frame)
    if not isinstance(sent, int):  # the connection is lost: Twisted's write finds out
        sent = 0
    if sent < len(frame):
        transport.write(frame[sent:])
    return True


def _release_upgrade(protocol: Any, channel_class: Any) -> None:
    """Let go of the HTTP request a WebSocket was upgraded from (~2 KiB per connection).

    Daphne upgrades by handing the TCP transport to the WebSocket protocol,
    but Twisted's HTTP channel stays registered as the transport's producer
    and keeps the request, its headers and its body buffer for as long as
    the socket is open. Once upgraded, that channel does nothing a producer
    would: its request is never finished, so it never pauses or resumes the
    transport. Unregistered and emptied, channel and request are freed.
    """
    transport = getattr(protocol, "transport", None)
    channel = getattr(transport, "producer", None)
    if (
        not isinstance(channel, channel_class)
        or channel.transport is not transport
        or transport.protocol is not protocol
        or not channel._handlingRequest
        or channel._requestProducer is not None
    ):
        return
    transport.unregisterProducer()
    del channel.requests[:]


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
    from twisted.internet.tcp import Connection  # loaded with Daphne
    from twisted.web.http import HTTPChannel

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
        if kind == "websocket.accept":
            result = original(self, message)
            try:
                _release_upgrade(self, HTTPChannel)
            except AttributeError:  # a Twisted this was not written for: it keeps them
                pass
            return result
        if kind != "websocket.send":
            return original(self, message)
        text = message.get("text")
        if text and not message.get("bytes") and _send_text(self, text, Connection):
            result = None
        else:
            result = original(self, message)
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
