"""``Outbox``: the bounded outgoing queue of one connection.

Every frame for the client goes through it, in order, and a socket that
writes slowly never blocks whoever produces frames (the read loop, a
finished operation, the delivery of a notification). Queueing into an idle
outbox sends at once, in the caller's call, for as long as the transport
takes frames without making the sender wait (Daphne always does; uvicorn
until its write buffer fills): no task per frame, which is most of what a
notification to an idle subscriber would otherwise cost. The first send
that must wait continues in a sender task, which sends the rest and ends
when the queue is empty.
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
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Literal

from . import metrics

__all__ = ["OVERFLOW_POLICIES", "Disconnected", "Outbox", "OverflowPolicy"]

LOG = logging.getLogger(__name__)

OverflowPolicy = Literal["close", "drop_oldest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("close", "drop_oldest")

_NOTIFICATION, _REPLY = True, False


class Disconnected(Exception):
    """Raised by a ``send`` whose socket is already gone (the client left mid-send)."""


class Outbox:
    """Queue frames for one socket and send them in order from one task (``run``)."""

    # One per socket, for as long as it is open: no instance dict.
    __slots__ = (
        "_close",
        "_closing",
        "_finished",
        "_frames",
        "_notifications",
        "_pumping",
        "_send",
        "_sender",
        "_spawn",
        "_started",
        "dropped",
        "limit",
        "overflows",
        "policy",
    )

    def __init__(
        self,
        send: Callable[[str], Coroutine[Any, Any, None]],
        close: Callable[[int, str], Awaitable[None]],
        *,
        limit: int,
        policy: OverflowPolicy = "close",
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]] | None = None,
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
        #: (is a notification, text, issue time of its event for the latency metric);
        #: made when a frame is queued, dropped when the queue is empty again (an
        #: empty deque holds ~0.7 KiB: an idle subscriber's socket needs none).
        self._frames: deque[tuple[bool, str, float | None]] | None = None
        self._notifications = 0
        self._closing: tuple[int, str] | None = None
        # The sender task exists only while there is something to send: an
        # idle connection (most subscribers, most of the time) holds no task
        # and no event, ~2 KiB less per socket than a sender that waits.
        self._spawn = spawn or (lambda coro: asyncio.get_running_loop().create_task(coro))
        self._sender: asyncio.Task[Any] | None = None
        self._pumping = False  # sending inline (guards against re-entry from a send)
        self._started = False
        self._finished = False
        #: Notifications dropped by the "drop_oldest" policy.
        self.dropped = 0
        #: Times the queue overflowed, whatever the policy.
        self.overflows = 0

    @property
    def closing(self) -> bool:
        return self._closing is not None

    @property
    def close_code(self) -> int | None:
        """The code the connection is being closed with from this side; None if it is not."""
        return None if self._closing is None else self._closing[0]

    def __len__(self) -> int:
        return 0 if self._frames is None else len(self._frames)

    def _queue(self, frame: tuple[bool, str, float | None]) -> None:
        if self._frames is None:
            self._frames = deque()
        self._frames.append(frame)

    def reply(self, text: str) -> None:
        """Queue a frame that is never dropped."""
        if self._closing is None:
            self._queue((_REPLY, text, None))
            self._kick()

    def notify(self, text: str, issued_at: float | None = None) -> None:
        """Queue a notification, applying the overflow policy when the queue is full.

        ``issued_at`` is the wall-clock issue time of its event, if known: the
        latency metric measures from there to the frame handed to the socket.
        """
        if self._closing is not None:
            return
        if self._notifications >= self.limit:
            self.overflows += 1
            metrics.queue_overflowed(self.policy)
            if self.policy == "close":
                LOG.warning(
                    "Closing a slow client: %d notifications queued (limit %d)",
                    self._notifications,
                    self.limit,
                )
                metrics.notifications_dropped(self._notifications)
                self._frames = None
                self._notifications = 0
                self.close(1013, "Notification queue overflow: reconnect and resume")
                return
            self._drop_oldest_notification()
        self._queue((_NOTIFICATION, text, issued_at))
        self._notifications += 1
        self._kick()

    def _drop_oldest_notification(self) -> None:
        frames = self._frames
        if frames is None:
            return
        for index, (is_notification, _, _) in enumerate(frames):
            if is_notification:
                del frames[index]
                self._notifications -= 1
                self.dropped += 1
                metrics.notifications_dropped()
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    LOG.warning("Slow client: %d notifications dropped so far", self.dropped)
                return

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code``; later frames are ignored."""
        if self._closing is None:
            self._closing = (code, reason)
            self._kick()

    def start(self) -> None:
        """Begin sending (the socket was accepted); frames queued before go first."""
        self._started = True
        self._kick()

    async def flushed(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) until what is queued, the close frame included, is sent."""
        if self._sender is not None and not self._sender.done():
            await asyncio.wait([self._sender], timeout=timeout)

    def _kick(self) -> None:
        if not self._started or self._finished or self._pumping:
            return
        if self._sender is None or self._sender.done():
            self._pump()

    def _pump(self) -> None:
        """Send what is queued now, until a send has to wait; it then goes on in a task."""
        self._pumping = True
        try:
            while self._frames:
                is_notification, text, issued_at = self._take()
                sending = self._send(text)
                try:
                    awaited = sending.send(None)
                except StopIteration:
                    if is_notification:
                        metrics.notification_sent(issued_at)
                    continue
                except Disconnected:
                    self._gone()
                    return
                except BaseException as error:
                    # Raised where a sender task would raise it: the owner's
                    # spawn reports it (a connection closes with 1011).
                    self._sender = self._spawn(_raise(error))
                    return
                # The transport made the send wait: finish it, then the rest, in a task.
                self._sender = self._spawn(
                    self._send_queued((sending, awaited, is_notification, issued_at))
                )
                return
            if self._closing is not None:
                self._sender = self._spawn(self._send_queued())
        finally:
            self._pumping = False

    def _take(self) -> tuple[bool, str, float | None]:
        """The oldest queued frame (the queue goes when it is empty)."""
        frames = self._frames
        assert frames is not None
        frame = frames.popleft()
        if not frames:
            self._frames = None
        if frame[0]:  # a notification
            self._notifications -= 1
        return frame

    async def _send_queued(
        self, waiting: tuple[Coroutine[Any, Any, None], Any, bool, float | None] | None = None
    ) -> None:
        """Send until the queue is empty (then end: the next frame is sent inline again)."""
        # Frames queued while a send is awaited are taken by this loop; the
        # check for an empty queue and the return happen in one step, so a
        # frame queued after it finds this task done and is sent inline.
        try:
            if waiting is not None:
                sending, awaited, is_notification, issued_at = waiting
                await _resume(sending, awaited)
                if is_notification:
                    metrics.notification_sent(issued_at)
            while self._frames:
                is_notification, text, issued_at = self._take()
                await self._send(text)
                if is_notification:
                    metrics.notification_sent(issued_at)
            if self._closing is not None:
                self._finished = True
                await self._close(*self._closing)
        except Disconnected:
            self._gone()

    def _gone(self) -> None:
        # The client went away between two frames: an ordinary end of a
        # connection (its disconnect follows), not an error to report.
        LOG.debug("Socket gone with %d frames unsent", len(self))
        self._closing = self._closing or (1006, "Gone")
        self._finished = True
        self._frames = None
        self._notifications = 0


@types.coroutine
def _resume(sending: Coroutine[Any, Any, None], awaited: Any) -> Generator[Any, Any, None]:
    """Go on awaiting a coroutine already started by hand, as ``await`` would.

    ``sending.send(None)`` ran it up to its first wait and gave back what it
    waits for (``awaited``, a future as a rule); handed on to the task that
    awaits this, the task resumes the coroutine when that is done, and
    passes cancellation into it.
    """
    while True:
        try:
            received = yield awaited
        except GeneratorExit:
            sending.close()
            raise
        except BaseException as error:
            try:
                awaited = sending.throw(error)
            except StopIteration:
                return
        else:
            try:
                awaited = sending.send(received)
            except StopIteration:
                return


async def _raise(error: BaseException) -> None:
    raise error
