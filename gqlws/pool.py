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
    measured). Here the job itself hands its outcome to the loop, once.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def job() -> None:
        if future.cancelled():  # a stale read at worst: the outcome is then dropped
            return
        try:
            result = context.run(_framed, func, *args, **kwargs)
        except BaseException as error:  # handed to the awaiting task, like run_in_executor
            _hand_over(loop, future, None, error)
        else:
            _hand_over(loop, future, result, None)

    executor.submit(job)
    return await future


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:
        pass  # the loop closed meanwhile: nobody awaits the outcome any more


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
