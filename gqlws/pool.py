"""The threads that run user code: one bounded pool per consumer class.

Resolvers, ``subscribe``, ``publish`` and ``unsubscribed`` are user code that
may block (the Django ORM does). They run in the pool of the consumer class
that serves them, sized by its ``max_worker_threads``, and each run is
framed the way Django frames a request: stale database connections are
closed before and after, so a pool thread never holds a connection past
``CONN_MAX_AGE``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["executor_for", "run_in_pool", "submit"]

T = TypeVar("T")

_executors: dict[type, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def executor_for(owner: type, max_workers: int | None) -> ThreadPoolExecutor:
    """The pool of ``owner`` (a consumer class), created on first use."""
    executor = _executors.get(owner)
    if executor is None:
        with _lock:
            executor = _executors.get(owner)
            if executor is None:
                executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gqlws")
                _executors[owner] = executor
    return executor


def _close_db_connections() -> None:
    from django.db import close_old_connections

    close_old_connections()


def _framed(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    _close_db_connections()
    try:
        return func(*args, **kwargs)
    finally:
        _close_db_connections()


def submit(
    executor: ThreadPoolExecutor, func: Callable[..., T], *args: Any, **kwargs: Any
) -> Future[T]:
    """Run ``func`` in ``executor`` from any thread, with the caller's context variables."""
    context = contextvars.copy_context()
    return executor.submit(context.run, _framed, func, *args, **kwargs)


async def run_in_pool(
    executor: ThreadPoolExecutor, func: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Await ``func`` run in ``executor`` without blocking the event loop.

    Not ``loop.run_in_executor``: that chains a ``concurrent.futures.Future``
    to an asyncio one with a done-callback registered from the loop, under
    the future's lock, which the pool thread holds while it finishes; the
    loop then waits for the lock and the GIL once per operation (~20 us,
    measured). Here the job itself hands its outcome to the loop, batched
    with other jobs' outcomes (``_Inbox``).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()
    inbox = _inbox(loop)

    def job() -> None:
        if future.cancelled():  # a stale read at worst: the outcome is then dropped
            return
        try:
            result = context.run(_framed, func, *args, **kwargs)
        except BaseException as error:  # handed to the awaiting task, like run_in_executor
            inbox.put(future, None, error)
        else:
            inbox.put(future, result, None)

    executor.submit(job)
    return await future


class _Inbox:
    """Outcomes of pool jobs waiting for one event loop, handed over in batches.

    ``call_soon_threadsafe`` writes to the loop's wake-up socket on every
    call: a system call per operation, and a wake-up of the loop. Jobs that
    finish while the loop has not yet taken the previous outcomes add theirs
    to the same batch instead. (The GIL makes the deque operations and the
    flag safe; a race can schedule a second, empty drain, never lose an
    outcome: an outcome is queued before the flag is read.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # the registry of inboxes must not keep loops alive
        self.outcomes: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self.scheduled = False

    def put(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.outcomes.append((future, result, error))
        if not self.scheduled:
            self.scheduled = True
            loop = self.loop()
            try:
                if loop is not None:
                    loop.call_soon_threadsafe(self.drain)
            except RuntimeError:
                pass  # the loop closed meanwhile: nobody awaits the outcome any more

    def drain(self) -> None:
        self.scheduled = False
        outcomes = self.outcomes
        while outcomes:
            _settle(*outcomes.popleft())


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = _Inbox(loop)
    return inbox


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
