"""``Outbox``: the bounded outgoing queue of one connection.

Every frame for the client goes through it, in order, drained by one sender
task, so a socket that writes slowly never blocks whoever produces frames
(the read loop, a finished operation, the delivery of a notification).
Replies (acks, results, errors, completes) are always queued; the bound
applies to *notifications*, the frames a client can fall behind on. When a
client lets ``limit`` notifications pile up, the policy decides:

* ``"close"`` (default): drop what is queued and close with 1013 ("try
  again later"); the client reconnects and resumes from its last position;
* ``"drop_oldest"``: drop the oldest queued notification, as
  django-channels-graphql-ws did with its ``notification_queue_limit``.

Either way the overflow is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

__all__ = ["OVERFLOW_POLICIES", "Outbox", "OverflowPolicy"]

LOG = logging.getLogger(__name__)

OverflowPolicy = Literal["close", "drop_oldest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("close", "drop_oldest")

_NOTIFICATION, _REPLY = True, False


class Outbox:
    """Queue frames for one socket and send them in order from one task (``run``)."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        *,
        limit: int,
        policy: OverflowPolicy = "close",
    ) -> None:
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(
                f"Unknown overflow policy {policy!r}; expected one of {OVERFLOW_POLICIES}"
            )
        if limit < 1:
            raise ValueError(f"The notification queue limit must be at least 1, got {limit}")
        self._send = send
        self._close = close
        self.limit = limit
        self.policy = policy
        self._frames: deque[tuple[bool, str]] = deque()
        self._notifications = 0
        self._wakeup = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        #: Notifications dropped by the "drop_oldest" policy.
        self.dropped = 0
        #: Times the queue overflowed, whatever the policy.
        self.overflows = 0

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def __len__(self) -> int:
        return len(self._frames)

    def reply(self, text: str) -> None:
        """Queue a frame that is never dropped."""
        if self._closing is None:
            self._frames.append((_REPLY, text))
            self._wakeup.set()

    def notify(self, text: str) -> None:
        """Queue a notification, applying the overflow policy when the queue is full."""
        if self._closing is not None:
            return
        if self._notifications >= self.limit:
            self.overflows += 1
            if self.policy == "close":
                LOG.warning(
                    "Closing a slow client: %d notifications queued (limit %d)",
                    self._notifications,
                    self.limit,
                )
                self._frames.clear()
                self._notifications = 0
                self.close(1013, "Notification queue overflow: reconnect and resume")
                return
            self._drop_oldest_notification()
        self._frames.append((_NOTIFICATION, text))
        self._notifications += 1
        self._wakeup.set()

    def _drop_oldest_notification(self) -> None:
        for index, (is_notification, _) in enumerate(self._frames):
            if is_notification:
                del self._frames[index]
                self._notifications -= 1
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    LOG.warning("Slow client: %d notifications dropped so far", self.dropped)
                return

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code``; later frames are ignored."""
        if self._closing is None:
            self._closing = (code, reason)
            self._wakeup.set()

    async def run(self) -> None:
        """The sender loop: returns once the close frame is sent."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._frames:
                is_notification, text = self._frames.popleft()
                if is_notification:
                    self._notifications -= 1
                await self._send(text)
            if self._closing is not None and not self._frames:
                await self._close(*self._closing)
                return
