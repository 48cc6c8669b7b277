"""What this process runs on: the settings, the fabric, and where work goes.

One switch, ``GQLWS["REDIS_URL"]``, decides everything here:

* embedded (unset): the in-memory fabric; fan-out and operations run in the
  consumers' thread pools;
* distributed (set): the Redis fabric; fan-out and operations are Celery
  tasks (``workers.tasks``), sent by name so that this package never
  imports the workers.

``issue`` is the one way an event enters the fabric: it returns once the
event has its offset, then starts its fan-out.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from typing import TYPE_CHECKING, Any

from broadcast import Event, EventKind, Fabric, get_fabric, set_fabric

from . import metrics
from .settings import Settings, get_settings, reset_settings

if TYPE_CHECKING:
    from .kombu_redis import LoopPublisher

__all__ = [
    "celery_app",
    "fabric",
    "issue",
    "issue_async",
    "renotify",
    "reset",
    "send_task",
    "send_task_from_loop",
    "settings",
    "tune_gc",
    "tune_gc_signal",
]

LOG = logging.getLogger(__name__)

_lock = threading.Lock()
_configured = False


def settings() -> Settings:
    return get_settings()


def fabric() -> Fabric:
    """The fabric of this process, chosen from the settings on first use."""
    global _configured
    if not _configured:
        with _lock:
            if not _configured:
                config = settings()
                if config.distributed:
                    set_fabric(_build_fabric(config))
                _configured = True
    return get_fabric()


def reset() -> None:
    """Forget the settings and the fabric (tests that switch modes)."""
    global _configured
    with _lock:
        reset_settings()
        set_fabric(None)
        _celery_app.cache_clear()
        _loop_publisher.cache_clear()
        _configured = False


#: ``gc.set_threshold`` of a tuned process: a young collection every 20,000
#: allocations instead of 700, older ones proportionally rarer.
GC_THRESHOLDS = (20_000, 20, 10)
_gc_tuned = False


def tune_gc() -> bool:
    """Tune this process's garbage collector for serving, once; True if it is (now) tuned.

    An edge holds thousands of long-lived objects per subscribed connection,
    and CPython's collector scans them again at every full collection: at
    1,000 connections a full collection stopped the event loop for 120 to
    200 ms (measured), once every few broadcasts, because a fan-out's
    temporaries (renders, frames, deliveries waiting their turn) live across
    many young collections and fill the old generation. So, as large Python
    services do:

    * one full collection, then ``gc.freeze()``: what exists once the process
      serves (Django, the schema, every module: about 110,000 objects in the
      example project) is never scanned again (freed by reference counting
      as ever; only reference cycles in it are never collected);
    * ``GC_THRESHOLDS``: temporaries die before a young collection sees
      them, instead of being promoted, and full collections are rare.

    Called by the first edge of the process (and by a Celery worker that
    connects ``tune_gc_signal``) unless ``GQLWS["TUNE_GC"]`` is False.
    Process-wide, like the collector: a project that tunes it itself says False.
    """
    global _gc_tuned
    with _lock:
        if _gc_tuned:
            return True
        if not settings().TUNE_GC:
            return False
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        _gc_tuned = True
    LOG.debug("Garbage collector tuned: %d objects frozen", gc.get_freeze_count())
    return True


def tune_gc_signal(**_signal: Any) -> None:
    """``tune_gc`` for a Celery signal (``worker_ready``, ``worker_process_init``)."""
    tune_gc()


def _build_fabric(config: Settings) -> Fabric:
    from broadcast.redis import RedisFabric

    assert config.REDIS_URL is not None
    return RedisFabric(
        config.REDIS_URL,
        prefix=config.KEY_PREFIX,
        history_length=config.HISTORY_LENGTH,
        history_ttl=config.HISTORY_TTL,
        heartbeat_interval=config.EDGE_HEARTBEAT_INTERVAL,
        heartbeat_ttl=config.EDGE_HEARTBEAT_TTL,
    )


_celery_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _celery_app() -> Any:
    from celery import Celery

    from .kombu_redis import use_for

    app = Celery("gqlws-sender")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    use_for(app)  # one Redis client per channel, not per command
    return app


def celery_app() -> Any:
    """A Celery app for *sending* gqlws tasks, configured from Django's settings."""
    # Under a lock: Celery's lazy package attributes are not safe to import
    # from two threads at once (two first requests of an edge did that).
    with _celery_lock:
        return _celery_app()


@functools.lru_cache(maxsize=1)
def _loop_publisher() -> LoopPublisher | None:
    from .kombu_redis import TRANSPORT, LoopPublisher

    app = celery_app()
    return LoopPublisher(app) if app.conf.broker_transport == TRANSPORT else None


def _task_options(args: tuple[Any, ...]) -> dict[str, Any]:
    """``send_task`` options of a gqlws task (msgpack: payloads and snapshots are bytes).

    ``argsrepr``: Celery would otherwise compute a ``repr`` of the arguments
    for monitoring on every send (~100 us of a query's round trip, measured),
    and show connection scopes (cookies, headers) to whoever reads its events.
    """
    return {
        "queue": settings().CELERY_QUEUE,
        "serializer": "msgpack",
        "argsrepr": f"({len(args)} gqlws arguments)",
        "kwargsrepr": "{}",
    }


def send_task(name: str, args: tuple[Any, ...]) -> None:
    """Send a gqlws task to the workers."""
    celery_app().send_task(name, args=args, **_task_options(args))


async def send_task_from_loop(name: str, args: tuple[Any, ...]) -> None:
    """``send_task`` from an event loop: pushed from the loop where it can be, else in a thread.

    ``kombu_redis.LoopPublisher`` sends the task from the loop once it has
    learned its message from the first one Celery sent (in a thread, as
    every send where it cannot: another broker or transport, an observer of
    Celery's publish signals). A push that fails is sent by Celery instead,
    with its retry policy. As with that policy's own retries, a push whose
    connection broke after Redis had taken it is then sent twice.
    """
    from redis.exceptions import RedisError

    publisher = _loop_publisher()
    options = _task_options(args)
    if publisher is not None and publisher.knows(name, options):
        try:
            await publisher.send(name, args, options)
            return
        except RedisError as error:
            LOG.debug("Pushing task %s failed (%r): sending it with Celery", name, error)
    if publisher is None:
        await asyncio.to_thread(send_task, name, args)
    else:
        send = functools.partial(send_task, name, args)
        await asyncio.to_thread(publisher.learn, name, args, options, send)


def issue(group: str, kind: EventKind, payload: bytes) -> Event:
    """Give the event its offset, then start its fan-out; returns the event."""
    event = fabric().issue(group, kind, payload)
    if settings().distributed:
        send_task("gqlws.fanout", (event.group, event.epoch, event.offset))
    else:
        from .notify import dispatch

        dispatch(event)
    return event


def renotify(
    edge_id: str, group: str, epoch: str, offsets: list[int], members: list[tuple[str, Any]]
) -> None:
    """Have the notifications of ``offsets`` computed again for ``members`` of one edge.

    ``members`` are (subscription id, registration data) pairs: the
    subscriptions with this gap (a lost fan-out chunk, a resume), one task.
    """
    metrics.gap_fill_requested(len(members))
    if settings().distributed:
        send_task("gqlws.renotify", (edge_id, group, epoch, offsets, members))
    else:
        from .notify import renotify as renotify_locally

        renotify_locally(edge_id, group, epoch, offsets, members)


async def issue_async(group: str, kind: EventKind, payload: bytes) -> Event:
    """``issue`` for coroutines; network calls leave the event loop free."""
    if settings().distributed:
        return await asyncio.to_thread(issue, group, kind, payload)
    return issue(group, kind, payload)
