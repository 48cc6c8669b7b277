"""Celery's Redis transport: one Redis client per channel, and no redelivery of queries.

Kombu's Redis channel builds a new ``redis.Redis`` around its connection
pool for every synchronous command it sends: each task published (an
edge's query, a fan-out), and on a worker each message received (the
unacknowledged-message index of its visibility timeout) and each
acknowledgement. With redis-py 6+, building one takes ~30 us (it copies its
table of reply callbacks), about as long as the command's round trip on
loopback: three times per query. A client is a stateless front of its pool
and safe to share, so this channel keeps one per pool (a new pool, after
the transport reconnects, gets a new client).

Second, what kombu's Redis transport does for every message it receives
and acknowledges (its "visibility timeout"): a transaction that records the
message in a hash and a sorted set, and another that removes it once
acknowledged, so that a message whose worker died unacknowledged goes back
to its queue an hour later. That is right for fan-out chunks (acknowledged
late, Guarantee 3), wrong for ``gqlws.execute``: a query or mutation is
acknowledged on receipt and runs at most once, and the edge has long told
its client that it got no answer; run an hour later, a mutation the client
then retried would have run twice. So a message of a task in
``AT_MOST_ONCE`` is only held in the worker's memory until its
acknowledgement (two Redis round trips less per query, ~20% of a worker's
time on the query path, measured); if the worker stops before running it,
it still goes back to the queue (Celery's warm shutdown, a reject with
requeue), and if the worker dies, it is lost, as its running would be.

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
from kombu.transport import virtual

__all__ = ["AT_MOST_ONCE", "TRANSPORT", "Channel", "QoS", "Transport", "use_for"]

#: The transport, as Celery's ``broker_transport`` names it.
TRANSPORT = f"{__name__}:Transport"

#: Tasks acknowledged on receipt: never redelivered after their worker died.
AT_MOST_ONCE = frozenset({"gqlws.execute"})


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's visibility timeout, except for the messages of ``AT_MOST_ONCE`` tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Delivery tags of the messages held in memory only.
        self._volatile: set[Any] = set()

    def append(self, message: Any, delivery_tag: Any) -> None:
        if (message.headers or {}).get("task") in AT_MOST_ONCE:
            self._volatile.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        if delivery_tag in self._volatile:
            self._volatile.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if delivery_tag in self._volatile:
            if requeue:
                self._requeue(self._delivered[delivery_tag], leftmost=True)
            self._volatile.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            super().reject(delivery_tag, requeue=requeue)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        # What kombu restores at shutdown: received, never acknowledged, so never run.
        if tag in self._volatile:
            message = self._delivered.get(tag)
            self._volatile.discard(tag)
            if message is not None:
                self._requeue(message, client=client, leftmost=leftmost)
        else:
            super().restore_by_tag(tag, client=client, leftmost=leftmost)

    def _requeue(self, message: Any, client: Any = None, leftmost: bool = False) -> None:
        info = message.delivery_info
        with self.channel.conn_or_acquire(client) as connection:
            pipe = connection.pipeline()
            self.channel._do_restore_message(
                message._raw, info["exchange"], info["routing_key"], pipe, leftmost
            )
            pipe.execute()


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS

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
