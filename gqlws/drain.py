"""Graceful drain of an edge on SIGTERM: finish what runs, close with 1012, exit.

An edge that is told to stop (SIGTERM from a process manager, a rolling
deploy) should not cut its WebSockets mid-request. On SIGTERM:

1. the edge is *draining*: new connections are closed at once with 1012
   ("service restart"), so clients reconnect elsewhere;
2. each open connection waits for its running queries and mutations, up to
   ``GQLWS["DRAIN_GRACE"]`` seconds, then closes with 1012 (its
   subscriptions are unregistered; clients resubscribe elsewhere with the
   positions they last saw and receive what they missed);
3. the connections' disconnects run (``unsubscribed`` callbacks), for up
   to ``DISCONNECT_WAIT`` seconds, then the edge leaves the fabric: what
   registrations are left, its stream and its info go at once, instead of
   when its heartbeat expires;
4. the server's own SIGTERM handling runs (Daphne stops its reactor).

``draining()`` is what a readiness probe asks: a draining edge must get no
new connections from the load balancer. ``open_connections()`` is what the
edge publishes for ``manage.py gqlws status``.

How it hooks in: the first connection of a process installs a SIGTERM
handler on the running event loop (``loop.add_signal_handler``), keeping
the handler it replaces to call when the drain is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, Protocol

__all__ = ["Drainable", "draining", "install", "open_connections", "track", "untrack"]

LOG = logging.getLogger(__name__)

#: Seconds the drain waits for closed connections to finish their disconnect.
DISCONNECT_WAIT = 5.0


class Drainable(Protocol):
    async def drain(self, grace: float) -> None: ...


#: Held strongly (a weak reference is ~0.1 KiB more per socket): the consumer
#: untracks itself when its disconnect is done and, whatever happens, when
#: its ASGI coroutine ends.
_connections: set[Any] = set()
_state = {"installed": False, "draining": False}


def draining() -> bool:
    """True once this process started draining."""
    return _state["draining"]


def track(connection: Drainable) -> None:
    """Remember an open connection, for the drain, until it is ``untrack``-ed."""
    _connections.add(connection)


def untrack(connection: Drainable) -> None:
    """Forget a connection whose disconnect is done."""
    _connections.discard(connection)


def open_connections() -> int:
    """Connections of this process between their accept and the end of their disconnect."""
    return len(_connections)


def install(grace: float) -> None:
    """Install the SIGTERM drain on the running loop, once per process."""
    if _state["installed"]:
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(_drain(grace, previous)))
    except (NotImplementedError, RuntimeError, ValueError):
        return  # not the main thread, or no signals here: nothing to drain for
    _state["installed"] = True


async def _drain(grace: float, previous: Any) -> None:
    if _state["draining"]:
        return
    _state["draining"] = True
    connections = list(_connections)
    LOG.warning("SIGTERM: draining %d connections (grace %.1f s)", len(connections), grace)
    if connections:
        await asyncio.gather(
            *(connection.drain(grace) for connection in connections), return_exceptions=True
        )
    loop = asyncio.get_running_loop()
    await _leave(loop)
    loop.remove_signal_handler(signal.SIGTERM)
    if callable(previous):
        previous(signal.SIGTERM, None)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


async def _leave(loop: asyncio.AbstractEventLoop) -> None:
    """Wait (bounded) for the disconnects, then take this loop's edge out of the fabric."""
    deadline = loop.time() + DISCONNECT_WAIT
    # Polled: disconnects end in the consumers, which know nothing of this wait.
    while _connections and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if _connections:
        LOG.warning("Drain: %d connections still disconnecting; leaving anyway", len(_connections))
    from .edge import Edge  # here: the edge module imports this one

    edge = Edge.of_loop(loop)
    if edge is None:
        return
    try:
        await asyncio.wait_for(edge.close(), DISCONNECT_WAIT)
    except Exception:
        # Its registrations go when its heartbeat expires instead.
        LOG.warning("Drain: leaving the fabric failed", exc_info=True)
