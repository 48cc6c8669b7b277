"""Pure implementations of the two GraphQL-over-WebSocket subprotocols.

``negotiate`` picks the subprotocol from the client's offer and returns a
fresh session for it; see ``base`` for how a session is driven.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import (
    Action,
    Authorize,
    Close,
    CloseCode,
    ConnectionState,
    OperationPayload,
    ProtocolError,
    ProtocolSession,
    Send,
    Start,
    Stop,
    encode,
)
from .legacy_ws import SUBPROTOCOL as GRAPHQL_WS
from .legacy_ws import LegacyWsSession
from .transport_ws import SUBPROTOCOL as GRAPHQL_TRANSPORT_WS
from .transport_ws import TransportWsSession

__all__ = [
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "SUPPORTED_SUBPROTOCOLS",
    "Action",
    "Authorize",
    "Close",
    "CloseCode",
    "ConnectionState",
    "LegacyWsSession",
    "OperationPayload",
    "ProtocolError",
    "ProtocolSession",
    "Send",
    "Start",
    "Stop",
    "TransportWsSession",
    "encode",
    "negotiate",
]

#: In order of preference: the modern protocol whenever the client offers it.
SUPPORTED_SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)

_SESSIONS: dict[str, type[ProtocolSession]] = {
    GRAPHQL_TRANSPORT_WS: TransportWsSession,
    GRAPHQL_WS: LegacyWsSession,
}


def negotiate(offered: Iterable[str]) -> ProtocolSession | None:
    """A session for the best subprotocol in ``offered``, or None if none fits."""
    offered = set(offered)
    for name in SUPPORTED_SUBPROTOCOLS:
        if name in offered:
            return _SESSIONS[name]()
    return None
