"""``Keepalives``: every connection's keepalive on one timer per event loop and interval.

A connection acknowledged with ``send_keepalive_every = every`` sends a
keepalive every ``every`` seconds until it closes. With a timer of its own
(``loop.call_later`` re-armed at each tick), an idle connection held a
``TimerHandle``, its context, its arguments and a bound method, ~0.3 KiB
per socket; and every handle the connections cancelled stayed in the
loop's heap until its time came, as the live ones kept asyncio from
purging them.

Here the connections of one loop and one interval wait in one dict, in the
order they are due: each is due ``every`` seconds after it was added or
last ticked, and the loop's clock never goes back, so the order of
insertion is the order of the due times. One timer is armed for the first;
when it fires, every connection due by then ticks and goes to the end, due
``every`` seconds later, exactly as its own timer would have had it. A
connection costs one dict entry and its due time::

    keepalives = Keepalives.of(30.0)      # of the running loop
    keepalives.add(connection)            # connection._send_keepalive() every 30 s
    keepalives.discard(connection)        # on close

A tick that raises is logged and the others go on. A connection ticked
after it closed should ``discard`` itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import ClassVar, Protocol

__all__ = ["Keepalives", "Ticking"]

LOG = logging.getLogger(__name__)

#: asyncio runs a timer once the clock is within this of its time: so do we.
_RESOLUTION = time.get_clock_info("monotonic").resolution


class Ticking(Protocol):
    def _send_keepalive(self) -> None: ...


class Keepalives:
    """The connections of one event loop sending a keepalive every ``every`` seconds."""

    __slots__ = ("_due", "_every", "_loop", "_timer")

    _registry: ClassVar[
        weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Keepalives]]
    ] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        if every <= 0:
            raise ValueError(f"A keepalive interval must be positive, got {every}")
        self._loop = loop
        self._every = every
        #: Connection -> loop time it is due, in due order.
        self._due: dict[Ticking, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, every: float) -> Keepalives:
        """The keepalives of the running loop at interval ``every``."""
        loop = asyncio.get_running_loop()
        by_interval = cls._registry.get(loop)
        if by_interval is None:
            by_interval = cls._registry[loop] = {}
        keepalives = by_interval.get(every)
        if keepalives is None:
            keepalives = by_interval[every] = cls(loop, every)
        return keepalives

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, connection: object) -> bool:
        return connection in self._due

    def add(self, connection: Ticking) -> None:
        """Tick ``connection`` every ``every`` seconds from now on (again from now if it was in)."""
        self._due.pop(connection, None)
        self._due[connection] = self._loop.time() + self._every
        if self._timer is None:
            self._arm()

    def discard(self, connection: Ticking) -> None:
        """Tick ``connection`` no more."""
        if self._due.pop(connection, None) is not None and not self._due:
            self._stop()

    def _arm(self) -> None:
        first = next(iter(self._due.values()))
        self._timer = self._loop.call_at(first, self._tick)

    def _stop(self) -> None:
        # Nothing left to tick: no timer, and no entry keeping the loop alive
        # in the registry (a test suite runs many loops).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        by_interval = self._registry.get(self._loop)
        if by_interval is not None and by_interval.get(self._every) is self:
            del by_interval[self._every]
            if not by_interval:
                del self._registry[self._loop]

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        due = self._due
        ticking = []
        for connection, when in due.items():
            if when > now + _RESOLUTION:
                break
            ticking.append(connection)
        # Due again first: a tick may discard its connection (it closed).
        for connection in ticking:
            del due[connection]
            due[connection] = now + self._every
        for connection in ticking:
            try:
                connection._send_keepalive()
            except Exception:
                LOG.exception("Sending a keepalive failed")
        if self._timer is not None:
            return  # re-armed by an add from a tick
        if due:
            self._arm()
        else:
            self._stop()
