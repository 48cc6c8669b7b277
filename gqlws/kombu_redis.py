"""Celery's Redis transport, with one Redis client per channel instead of one per command.

Kombu's Redis channel builds a new ``redis.Redis`` around its connection
pool for every synchronous command it sends: each task published (an
edge's query, a fan-out), and on a worker each message received (the
unacknowledged-message index of its visibility timeout) and each
acknowledgement. With redis-py 6+, building one takes ~30 us (it copies its
table of reply callbacks), about as long as the command's round trip on
loopback: three times per query. A client is a stateless front of its pool
and safe to share, so this channel keeps one per pool (a new pool, after
the transport reconnects, gets a new client).

Used by gqlws's Celery apps (the edges' sender, the workers) when the
broker is a ``redis://`` URL and the project chose no transport of its own
(``CELERY_BROKER_TRANSPORT``); anything else (``rediss://``, whose TLS
defaults kombu derives from the transport's name, Sentinel, RabbitMQ)
keeps kombu's own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis

__all__ = ["TRANSPORT", "Channel", "Transport", "use_for"]

#: The transport, as Celery's ``broker_transport`` names it.
TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _gqlws_client: tuple[Any, Any] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own long-lived client: built once anyway
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._gqlws_client
        if cached is None or cached[0] is not pool:
            cached = self._gqlws_client = (pool, super()._create_client())
        return cached[1]


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def use_for(app: Any) -> None:
    """Make ``app`` use this transport if its broker is Redis and it chose no transport."""
    if app.conf.broker_transport:
        return
    url = app.conf.broker_url
    if isinstance(url, str) and ";" not in url and urlsplit(url).scheme == "redis":
        app.conf.broker_transport = TRANSPORT
