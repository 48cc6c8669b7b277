"""``InOrder``: release what arrives out of order in offset order, exactly once.

Fan-out runs on many threads (or workers), so deliveries for one
subscription and group arrive in any order. The edge keeps, per
subscription and group, the last released offset and a small buffer:

* ``offset == last + 1`` is released, then whatever the buffer holds next;
* ``offset <= last`` is a duplicate (a retried fan-out) and is dropped;
* ``offset > last + 1`` waits in the buffer for the gap to fill;
* a delivery of another epoch means the stream was lost: ``EpochChanged``.

How to use it::

    order = InOrder(epoch="e1", last=41)      # position at registration
    order.push("e1", 43, "b")                 # -> []      (waits for 42)
    order.push("e1", 42, "a")                 # -> ["a", "b"]
    order.push("e1", 42, "a")                 # -> []      (duplicate)

``missing()`` tells which offsets a waiting buffer lacks, so that a caller
that suspects a loss (not possible in embedded mode, where every offset is
always delivered) can fill them from the group's history.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["EpochChanged", "InOrder"]

T = TypeVar("T")


class EpochChanged(Exception):
    """A delivery belongs to another lifetime of the group's stream."""


class InOrder(Generic[T]):
    """In-order release for one (subscription, group)."""

    __slots__ = ("_pending", "behind", "duplicates", "epoch", "last")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        #: Items waiting for a missing offset; None while there are none
        #: (nearly always: an edge holds one ``InOrder`` per subscription).
        self._pending: dict[int, T] | None = None
        self.duplicates = 0
        #: An offset known to exist in the stream beyond ``last`` (set by a
        #: caller that looked), so the gap up to it can be filled.
        self.behind = 0

    def push(self, epoch: str, offset: int, item: T) -> list[T]:
        """Accept ``item`` at ``offset``; return the items now releasable, in order."""
        if epoch != self.epoch:
            raise EpochChanged(f"Expected epoch {self.epoch}, got {epoch}")
        pending = self._pending
        if offset <= self.last or (pending is not None and offset in pending):
            self.duplicates += 1
            return []
        if offset != self.last + 1:
            if pending is None:
                pending = self._pending = {}
            pending[offset] = item
            return []
        released = [item]
        self.last = offset
        if pending is not None:
            while pending:
                following = pending.pop(self.last + 1, None)
                if following is None:
                    break
                released.append(following)
                self.last += 1
            if not pending:
                self._pending = None
        return released

    @property
    def waiting(self) -> bool:
        """True while later offsets wait for a missing one."""
        return bool(self._pending)

    def missing(self) -> list[int]:
        """Offsets between ``last`` and the highest buffered one that have not arrived."""
        pending = self._pending
        if not pending:
            return []
        return [o for o in range(self.last + 1, max(pending)) if o not in pending]
