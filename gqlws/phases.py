"""Root values that tell a Subscription's field resolver which phase it runs in.

The executor runs a subscription's document three ways: when a client
subscribes, once per notification, and when the subscription ends. The root
value says which, and carries what the phase produces back to the caller.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PublishPhase", "SubscribePhase", "UnsubscribedPhase", "root_for"]


class SubscribePhase:
    """Root value while a client subscribes: collects the groups ``subscribe`` chose."""

    def __init__(self) -> None:
        #: The gqlws Subscription class whose field was resolved, if any.
        self.subscription: type | None = None
        self.groups: list[str] = []
        #: The subscriber's cohort key (serialized), None: a cohort of its own.
        self.cohort: bytes | None = None


class PublishPhase:
    """Root value while a notification is computed for one subscriber."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.skipped = False


class UnsubscribedPhase:
    """Root value while the ``unsubscribed`` callback runs."""


def root_for(phase: str) -> Any:
    """The root value of a request phase: "execute", "subscribe" or "unsubscribed"."""
    if phase == "execute":
        return None
    if phase == "subscribe":
        return SubscribePhase()
    if phase == "unsubscribed":
        return UnsubscribedPhase()
    raise ValueError(f"Unknown phase {phase!r}")
