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

Third, ``LoopPublisher``: an edge sends its queries to the workers from its
event loop, without a thread and without Celery's publishing machinery,
which costs ~300 us of Python per message beside a ~100 us LPUSH (measured).
It learns the message from one that Celery and kombu sent themselves, and
only where it then builds exactly that message.

Used by gqlws's Celery apps (the edges' sender, the workers) when the
broker is a ``redis://`` URL and the project chose no transport of its own
(``CELERY_BROKER_TRANSPORT``); anything else (``rediss://``, whose TLS
defaults kombu derives from the transport's name, Sentinel, RabbitMQ)
keeps kombu's own.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kombu import serialization
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps as kombu_dumps

__all__ = [
    "AT_MOST_ONCE",
    "TRANSPORT",
    "Channel",
    "LoopPublisher",
    "QoS",
    "Transport",
    "use_for",
]

LOG = logging.getLogger(__name__)

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


#: Where this thread's ``Channel._put`` reports the messages it pushes (``LoopPublisher``).
_observed = threading.local()


@dataclass(frozen=True)
class _Put:
    """One message as this transport pushed it to Redis."""

    key: str  # the list it went to
    message: dict[str, Any]  # before its JSON encoding
    plain: bool  # one LPUSH and nothing else (no batch, no queue expiry)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS

    _gqlws_client: tuple[Any, Any] | None = None

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        sink = getattr(_observed, "sink", None)
        if sink is not None:
            batched = kwargs.get("_publish_batch") is not None
            plain = not batched and not (self._expires and queue in self._expires)
            priority = self._get_message_priority(message, reverse=False)
            sink.append(_Put(self._q_for_pri(queue, priority), copy.deepcopy(message), plain))
        super()._put(queue, message, **kwargs)

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


#: Properties of a message that are its own, not its task's.
_OWN_PROPERTIES = ("correlation_id", "reply_to", "delivery_tag")


@dataclass(frozen=True)
class _Template:
    """What every message of one task shares: its list, its properties."""

    key: str
    properties: dict[str, Any]


def _key(name: str, options: dict[str, Any]) -> tuple[Any, ...]:
    return (name, *sorted(options.items()))


class LoopPublisher:
    """Sends tasks from an event loop as this transport would, with an asyncio Redis client.

    Celery's ``send_task`` is synchronous, so an edge ran it in a thread:
    a thread hop, then ~300 us of Celery's and kombu's Python (routing,
    the producer pool, declaring the queue, retry wrappers) around one
    LPUSH, on the path of every query (measured). Here the message is
    built with Celery's own ``create_task_message`` and kombu's serializer
    and envelope, and pushed with ``redis.asyncio`` from the loop.

    It learns each task's message from one that kombu sent (``learn``, in
    the thread, with Celery's full path) and compares it with the one it
    would have built for the same task id: only if they are equal, field for
    field, does it send that task itself; otherwise (another Celery or kombu
    version, a queue with an expiry, a priority, compression, a sent event)
    it says why in the log and leaves every send to Celery. Tasks are also
    left to Celery while anything listens to ``before_task_publish`` or
    ``after_task_publish`` (tracing instrumentations add headers there).
    """

    #: Connections per event loop: queries wait for one beyond that.
    POOL_SIZE = 16

    def __init__(self, app: Any) -> None:
        self.app = app
        #: Per task name and ``send_task`` options: what its messages share; None: Celery sends.
        self._templates: dict[tuple[Any, ...], _Template | None] = {}
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def knows(self, name: str, options: dict[str, Any]) -> bool:
        """Whether ``send`` may send task ``name`` (learned, and nothing observes publishing)."""
        if self._templates.get(_key(name, options)) is None:
            return False
        from celery import signals

        return not (signals.before_task_publish.receivers or signals.after_task_publish.receivers)

    def learn(
        self, name: str, args: tuple[Any, ...], options: dict[str, Any], send: Callable[[], Any]
    ) -> None:
        """Run ``send`` (Celery's ``send_task(name, args, **options)``) and learn its message.

        ``options``: the ``send_task`` options (queue, serializer, argsrepr,
        kwargsrepr) that ``send`` uses, and every later ``send`` of ``name``.
        """
        key = _key(name, options)
        if key in self._templates:
            send()
            return
        sink: list[_Put] = []
        _observed.sink = sink
        try:
            send()
        finally:
            del _observed.sink
        self._templates[key] = self._template(name, args, options, sink)

    def _template(
        self, name: str, args: tuple[Any, ...], options: dict[str, Any], sink: list[_Put]
    ) -> _Template | None:
        if len(sink) != 1 or not sink[0].plain:
            return self._refuse(name, "the message was not one plain LPUSH")
        put = sink[0]
        sent = put.message
        properties = {k: v for k, v in sent["properties"].items() if k not in _OWN_PROPERTIES}
        template = _Template(put.key, properties)
        own = {key: sent["properties"].get(key) for key in _OWN_PROPERTIES}
        try:
            ours = self._message(template, name, sent["headers"]["id"], args, options, **own)
        except Exception as error:  # whatever it is, Celery sends, as before
            return self._refuse(name, f"building it failed: {error!r}")
        if ours != sent:
            differing = sorted(
                key
                for part in ("headers", "properties")
                for key in {*ours[part], *sent[part]}
                if ours[part].get(key) != sent[part].get(key)
            )
            differing += [
                k for k in ours if k not in ("headers", "properties") and ours[k] != sent.get(k)
            ]
            return self._refuse(name, f"it differs from Celery's in {', '.join(differing)}")
        return template

    @staticmethod
    def _refuse(name: str, why: str) -> None:
        LOG.info("Task %s is sent by Celery, not from the event loop: %s", name, why)
        return None

    def _message(
        self,
        template: _Template,
        name: str,
        task_id: str,
        args: tuple[Any, ...],
        options: dict[str, Any],
        *,
        correlation_id: Any,
        reply_to: Any,
        delivery_tag: Any,
    ) -> dict[str, Any]:
        """The message of task ``name`` as Celery's ``send_task`` and this transport build it."""
        task = self.app.amqp.create_task_message(
            task_id,
            name,
            args,
            None,
            reply_to=reply_to,
            argsrepr=options.get("argsrepr"),
            kwargsrepr=options.get("kwargsrepr"),
            ignore_result=None,
        )
        content_type, encoding, body = serialization.dumps(
            task.body, serializer=options.get("serializer")
        )
        properties = dict(template.properties)  # only its own keys are set: a shallow copy
        properties.update(correlation_id=correlation_id, reply_to=reply_to)
        properties["delivery_tag"] = delivery_tag
        return {
            "body": base64.b64encode(body).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": task.headers,
            "properties": properties,
        }

    async def send(self, name: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        """Push one message of task ``name``; Redis errors propagate (nothing is retried)."""
        template = self._templates[_key(name, options)]
        assert template is not None
        task_id = str(uuid.uuid4())
        message = self._message(
            template,
            name,
            task_id,
            args,
            options,
            correlation_id=task_id,
            reply_to=self.app.thread_oid,
            delivery_tag=str(uuid.uuid4()),
        )
        await self._client().lpush(template.key, kombu_dumps(message))

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from redis import asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            for closed in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[closed]
            # No retry: a query pushed twice would run twice. A failed push
            # goes to Celery's send instead, with its retry policy.
            pool = aredis.BlockingConnectionPool.from_url(
                self.app.conf.broker_url,
                max_connections=self.POOL_SIZE,
                timeout=5,
                socket_connect_timeout=5,
                socket_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
            client = self._clients[loop] = aredis.Redis(connection_pool=pool)
        return client


def use_for(app: Any) -> None:
    """Make ``app`` use this transport if its broker is Redis and it chose no transport."""
    if app.conf.broker_transport:
        return
    url = app.conf.broker_url
    if isinstance(url, str) and ";" not in url and urlsplit(url).scheme == "redis":
        app.conf.broker_transport = TRANSPORT
