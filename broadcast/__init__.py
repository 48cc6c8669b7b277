"""The broadcast fabric of gqlws: ordered group events, subscriber registry, edge deliveries.

Knows nothing of GraphQL. ``fabric`` states the contract, ``memory`` is the
embedded backend, ``ordering`` the edge's in-order buffer. ``get_fabric()``
returns the process's fabric.
"""

from __future__ import annotations

import threading

from .fabric import (
    Deliverable,
    Delivery,
    DeliveryKind,
    EdgeStats,
    Event,
    EventKind,
    Fabric,
    HistoryLost,
    HistoryTrimmed,
    Position,
    Reply,
    SharedDelivery,
    Sink,
    Subscriber,
)
from .memory import InMemoryFabric
from .ordering import EpochChanged, InOrder

__all__ = [
    "Deliverable",
    "Delivery",
    "DeliveryKind",
    "EdgeStats",
    "EpochChanged",
    "Event",
    "EventKind",
    "Fabric",
    "HistoryLost",
    "HistoryTrimmed",
    "InMemoryFabric",
    "InOrder",
    "Position",
    "Reply",
    "SharedDelivery",
    "Sink",
    "Subscriber",
    "get_fabric",
    "set_fabric",
]

_fabric: Fabric | None = None
_lock = threading.Lock()


def get_fabric() -> Fabric:
    """The fabric of this process, created on first use (in memory unless configured)."""
    global _fabric
    if _fabric is None:
        with _lock:
            if _fabric is None:
                _fabric = InMemoryFabric()
    return _fabric


def set_fabric(fabric: Fabric | None) -> None:
    """Replace the process's fabric (configuration and tests); None resets to the default."""
    global _fabric
    with _lock:
        _fabric = fabric
