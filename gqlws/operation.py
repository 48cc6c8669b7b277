"""Bookkeeping of a connection's running work: operations and background tasks.

An idle subscribed connection keeps its ``Operation`` and its
``LiveSubscription`` for as long as it lives, thousands of them per edge:
both have slots, and hold no payload nor empty containers once started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LiveSubscription", "Operation", "TaskGroup"]


@dataclass(eq=False, slots=True)
class LiveSubscription:
    """A registered subscription: what its notifications and its end need."""

    sub_id: str
    prepared: Any  # PreparedOperation
    variables: dict[str, Any] | None
    context: Any  # OperationContext
    ended: bool = False
    #: Its Subscription class (``module.QualName``), the label of its metrics.
    name: str = "unknown"
    #: The cohort key its ``subscribe`` phase computed (None: on its own).
    cohort: bytes | None = None


@dataclass(eq=False, slots=True)
class Operation:
    """One client operation (query, mutation or subscription) by its id.

    A stopped operation stays inactive for good: its task may still be
    finishing in a thread, and whatever it produces is dropped. The id itself
    may be reused by the client for a new ``Operation`` at once.

    Its payload is not kept: it goes to the task that runs the operation
    (a live subscription keeps what it needs in ``subscription``).
    """

    op_id: str
    task: asyncio.Task[Any] | None = None
    active: bool = field(default=True)
    #: Set once a subscription is registered and live.
    subscription: LiveSubscription | None = None
    #: Done once this operation is known not to be a subscription, or is
    #: live, or failed: operations the client sent later wait for it.
    settled: asyncio.Future[None] | None = None
    #: The ``settled`` futures of operations sent before this one, then
    #: unsettled; None once waited for (or when there were none).
    after: list[asyncio.Future[None]] | None = None

    def cancel(self) -> None:
        self.active = False
        if self.task is not None and not self.task.done():
            self.task.cancel()


class TaskGroup:
    """Background tasks of one connection.

    Every task gets a done-callback that retrieves its exception (logged,
    never lost), and ``cancel_all`` cancels then awaits them all, so that no
    task outlives its connection. The set of tasks exists only while one
    runs: an idle connection (no task) holds none (a set is ~0.2 KiB even
    empty).
    """

    __slots__ = ("_log", "_tasks")

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._log.error("Background task %r failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        return 0 if self._tasks is None else len(self._tasks)

    async def cancel_all(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks or () if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
