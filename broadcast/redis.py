"""``RedisFabric``: the fabric shared by every edge and worker process (distributed mode).

The data model, all under one prefix (``gqlws`` below). A group's keys
carry the Redis Cluster hash tag ``{g:<group>}`` so they share a slot;
braces and ``%`` in group names are escaped so the tag, and the key, stay
unambiguous whatever the name::

    gqlws:{g:<group>}:meta        HASH    epoch, last (the last offset issued)
    gqlws:{g:<group>}:events      STREAM  entry id "<offset>-1": k (kind), p (payload)
    gqlws:{g:<group>}:subs        ZSET    "<edge id> <sub id>" -> offset at registration
    gqlws:{g:<group>}:idem:<key>  STRING  "<epoch> <offset>" of a keyed issue (TTL)
    gqlws:{e:<edge>}:subs         HASH    sub id -> record: groups, positions, data
    gqlws:{e:<edge>}:stream       STREAM  t (d: deliveries, r: reply), b (msgpack batch)
    gqlws:{e:<edge>}:info         HASH    beat (Redis clock) + the edge's stats (TTL)
    gqlws:edges                   ZSET    edge id -> heartbeat expiry (Redis clock)

The algorithm is in the Lua scripts of ``broadcast/scripts`` (one atomic
step each):

* ``issue`` increments ``last`` and appends the event with the offset as
  its stream id, so ``history`` is an ``XRANGE`` and a trimmed history is
  seen from the first id returned. An idempotency key returns the event it
  first issued (keys are per group: they share the group's slot).
* ``register`` reads ``last`` and adds the subscription to the group's
  ``subs`` with that score, in the same step as every ``issue`` is one step:
  an event is either issued before (offset <= score, not fanned out to it)
  or after (offset > score, fanned out to it). ``subscribers(group,
  before)`` is then ``ZRANGE subs -inf (before BYSCORE``, in the order
  (offset at registration, member); its slices are ``LIMIT`` windows.
* ``deliver`` appends a whole batch as one stream entry, only if the edge is
  in ``edges``; each edge reads its stream with ``XREAD BLOCK``, hands each
  read to its sink and trims what it has read.
* Each edge heartbeats its score in ``edges`` and sweeps the edges whose
  heartbeat expired: their registrations, hash and stream go (Guarantee 4).

Expiry. ``events`` expires ``history_ttl`` after the last issue. ``meta``
expires only while the group has no subscribers: an epoch that expired
under live subscribers would end them all with a spurious resync. ``subs``
never expires: a TTL refreshed by issues would drop the live subscribers of
a quiet group, one refreshed by heartbeats costs a write per group per
edge per beat; members leave by unregister, detach, or sweep instead.

Redis losing its data (a restart without persistence) shows up as a new
epoch: the next ``issue`` or ``register`` of a group finds no ``meta`` and
starts one, ``history`` raises ``HistoryLost``, and edges see the epoch
change. The edge notices its own loss (its entry missing from ``edges`` at
its next heartbeat or registration) and calls ``on_lost``, on which it must
re-register the subscriptions it holds; its reader reconnects with backoff.

How to use it::

    fabric = RedisFabric("redis://redis:6379/0")
    fabric.attach_edge(edge_id, sink, on_lost=reregister)   # on the edge's loop
    positions = await fabric.register(edge_id, sub_id, ["chat"], data)
    event = fabric.issue("chat", EventKind.PUBLISH, payload)  # any thread
    for subscriber in fabric.subscribers("chat", before=event.offset):
        ...
    fabric.deliver(subscriber.edge_id, [Delivery(...)])

The sync client (``issue`` ... ``sweep_dead_edges``) is shared by threads;
the edge side uses an asyncio client per event loop. Sync calls raise
``redis.RedisError`` when Redis is unreachable: callers retry, the fabric
does not (a retried write whose answer was lost would issue twice).
Subscription data and delivery bodies must be msgpack-serializable
(bytes, str, numbers, lists, dicts); they come back as msgpack decodes them.

Redis Cluster: group keys carry hash tags, but ``register`` spans a
subscription's groups and its edge, and cleanup scripts reach keys named in
records; this backend targets one Redis (or Sentinel) today.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .fabric import (
    Deliverable,
    Delivery,
    DeliveryKind,
    EdgeStats,
    Event,
    EventKind,
    Fabric,
    HistoryLost,
    HistoryTrimmed,
    Position,
    Reply,
    SharedDelivery,
    Sink,
    Subscriber,
)

__all__ = ["RedisFabric"]

LOG = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
READ_BLOCK_MS = 1000
READ_COUNT = 1000
#: Seconds between trims of an edge's stream while entries keep coming.
TRIM_INTERVAL = 0.05
FETCH_CHUNK = 500
SWEEP_BATCH = 100
#: Connections of an edge's asyncio client (per event loop), and the seconds
#: a call waits for one when all are busy.
ASYNC_POOL_SIZE = 32
ASYNC_POOL_WAIT = 30.0

_SCRIPT_NAMES = (
    "issue",
    "register",
    "unregister",
    "forget_edge",
    "expired_edges",
    "heartbeat",
    "deliver",
)


def _load_scripts() -> dict[str, str]:
    folder = importlib.resources.files(__package__ or "broadcast") / "scripts"
    common = (folder / "common.lua").read_text(encoding="utf-8")
    return {
        name: common + (folder / f"{name}.lua").read_text(encoding="utf-8")
        for name in _SCRIPT_NAMES
    }


_SOURCES = _load_scripts()


def _escape(name: str) -> str:
    # No brace may reach a key: the first "}" would end the hash tag early,
    # and two names could then make the same key ("a}:idem:x" + "events" vs
    # "a" + "idem:x}:events").
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _next_id(stream_id: bytes | str) -> str:
    """The smallest stream id after ``stream_id`` (what ``XTRIM MINID`` keeps from)."""
    ms, _, seq = _text(stream_id).partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _check_edge_id(edge_id: str) -> None:
    if not edge_id or " " in edge_id:
        # The subscribers set's members are "<edge id> <sub id>".
        raise ValueError(f"An edge id must be non-empty, without spaces: {edge_id!r}")


class _Outage:
    """Backoff and log-once bookkeeping for one task that retries forever."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = 0.0
        self.since: float | None = None

    def failed(self, exc: BaseException) -> float:
        """Note a failure; the delay before the next attempt."""
        if self.since is None:
            self.since = time.monotonic()
            unexpected = not isinstance(exc, (redis.RedisError, OSError))
            LOG.warning("%s failed, retrying with backoff: %r", self.what, exc, exc_info=unexpected)
        self.delay = min(max(self.delay * 2, BACKOFF_MIN), BACKOFF_MAX)
        return self.delay

    def over(self) -> None:
        if self.since is not None:
            LOG.warning("%s works again after %.1f s", self.what, time.monotonic() - self.since)
        self.since = None
        self.delay = 0.0


def _log_task_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        LOG.error("Task %s ended", task.get_name(), exc_info=task.exception())


@dataclass
class _Edge:
    sink: Sink
    on_lost: Callable[[], None] | None
    loop: asyncio.AbstractEventLoop
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Whether this edge has been seen in the edges set: if it is later found
    #: missing, its registrations were lost.
    known: bool = False
    #: Set when the edge's stream may have been recreated: read it from the start.
    reread: bool = False
    #: Set by detach: the edge's tasks end even if a cancellation was lost.
    stopped: bool = False
    #: What the edge publishes about itself in its info hash at each heartbeat.
    stats: EdgeStats | None = None

    def stopping(self) -> bool:
        """Whether the calling task (one of the edge's) must end now."""
        if self.stopped:
            return True
        # Python 3.11's asyncio.wait_for, which redis-py sends commands
        # through, swallows a cancellation that lands as the send completes
        # (CPython gh-86296): the task then runs on with cancelling() > 0.
        # Without this check such a task outlives detach and blocks the
        # loop's shutdown forever.
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        return bool(cancelling is not None and cancelling())


@dataclass
class _AsyncClient:
    client: aredis.Redis
    scripts: dict[str, Any]


class RedisFabric(Fabric):
    """The fabric on Redis. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gqlws",
        history_length: int = 1000,
        history_ttl: float = 3600,
        idempotency_ttl: float = 600,
        heartbeat_interval: float = 2.0,
        heartbeat_ttl: float = 10.0,
        edge_stream_maxlen: int = 100_000,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"The prefix must not contain braces (hash tags): {prefix!r}")
        if heartbeat_ttl <= heartbeat_interval:
            raise ValueError("heartbeat_ttl must exceed heartbeat_interval")
        self.url = url
        self.prefix = prefix
        self.history_length = history_length
        self.history_ttl = history_ttl
        self.idempotency_ttl = idempotency_ttl
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.edge_stream_maxlen = edge_stream_maxlen
        self._edges_key = f"{prefix}:edges"
        # No retries: a write whose answer was lost (a timeout) may have run,
        # and issuing it again would append the event twice. Callers retry
        # where they know it is safe (with an idempotency key).
        self._sync = redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {name: self._sync.register_script(src) for name, src in _SOURCES.items()}
        self._async: dict[asyncio.AbstractEventLoop, _AsyncClient] = {}
        self._edges: dict[str, _Edge] = {}
        self._finishing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<RedisFabric {self.url} prefix={self.prefix!r}>"

    # ---- Keys -------------------------------------------------------------

    def _group_base(self, group: str) -> str:
        return f"{self.prefix}:{{g:{_escape(group)}}}:"

    def _edge_base(self, edge_id: str) -> str:
        return f"{self.prefix}:{{e:{_escape(edge_id)}}}:"

    def _forget_edge(self, edge_id: str, *, force: bool) -> dict[str, Any]:
        """The keys and arguments of ``forget_edge`` (force: even if its heartbeat is fresh)."""
        base = self._edge_base(edge_id)
        return {
            "keys": [self._edges_key, base + "subs", base + "stream", base + "info"],
            "args": [edge_id, self._history_ttl_ms, "1" if force else "0"],
        }

    @property
    def _history_ttl_ms(self) -> int:
        return max(1, int(self.history_ttl * 1000))

    # ---- Broadcaster and fan-out side --------------------------------------

    def issue(
        self, group: str, kind: EventKind, payload: bytes, *, key: str | None = None
    ) -> Event:
        kind = EventKind(kind)
        base = self._group_base(group)
        keys = [base + "meta", base + "events", base + "subs"]
        if key is not None:
            keys.append(base + "idem:" + key)
        now = time.time()
        found = self._scripts["issue"](
            keys=keys,
            args=[
                kind.value,
                payload,
                uuid.uuid4().hex,
                self.history_length,
                self._history_ttl_ms,
                max(1, int(self.idempotency_ttl * 1000)),
                now,
            ],
        )
        issued_at: float | None = now
        if len(found) == 4:  # an idempotent repeat: the first event as stored
            kind, payload, issued_at = EventKind(_text(found[2])), found[3], None
        return Event(group, _text(found[0]), int(found[1]), kind, payload, issued_at)

    def subscribers(
        self, group: str, before: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Subscriber]:
        # Read eagerly: a connection error surfaces from this call, where the
        # caller can retry, not halfway through its iteration.
        if start < 0 or (stop is not None and stop < 0):
            # Counted from the end (as list slices are): read all, then slice.
            members = self._members(group, before, 0, -1)[start:stop]
        elif stop is not None and stop <= start:
            return iter(())
        else:
            members = self._members(group, before, start, -1 if stop is None else stop - start)
        found: list[Subscriber] = []
        for i in range(0, len(members), FETCH_CHUNK):
            found.extend(self._fetch([_text(m) for m in members[i : i + FETCH_CHUNK]]))
        return iter(found)

    def _members(self, group: str, before: int, offset: int, count: int) -> list[bytes]:
        """``count`` members (-1: all) registered before ``before``, from ``offset`` on."""
        found: list[bytes] = self._sync.zrange(  # type: ignore[assignment]
            self._group_base(group) + "subs",
            "-inf",
            f"({before}",
            byscore=True,
            offset=offset,
            num=count,
        )
        return found

    def _fetch(self, members: list[str]) -> list[Subscriber]:
        """The subscribers named by ``members``, in that order; gone ones skipped."""
        by_edge: dict[str, list[str]] = {}
        for member in members:
            edge_id, _, sub_id = member.partition(" ")
            by_edge.setdefault(edge_id, []).append(sub_id)
        pipe = self._sync.pipeline(transaction=False)
        for edge_id, sub_ids in by_edge.items():
            pipe.hmget(self._edge_base(edge_id) + "subs", sub_ids)
        records: dict[tuple[str, str], bytes] = {}
        for (edge_id, sub_ids), values in zip(by_edge.items(), pipe.execute(), strict=True):
            for sub_id, value in zip(sub_ids, values, strict=True):
                if value is not None:
                    records[edge_id, sub_id] = value
        found = []
        for member in members:
            edge_id, _, sub_id = member.partition(" ")
            record = records.get((edge_id, sub_id))
            if record is not None:
                found.append(self._subscriber(edge_id, sub_id, record))
        return found

    def still_registered(self, edge_id: str, sub_ids: Sequence[str]) -> set[str]:
        if not sub_ids:
            return set()
        pipe = self._sync.pipeline(transaction=False)
        key = self._edge_base(edge_id) + "subs"
        for sub_id in sub_ids:
            pipe.hexists(key, sub_id)
        return {s for s, there in zip(sub_ids, pipe.execute(), strict=True) if there}

    @staticmethod
    def _subscriber(edge_id: str, sub_id: str, record: bytes) -> Subscriber:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(record)
        (groups, _bases), positions, data = unpacker
        return Subscriber(
            edge_id,
            sub_id,
            {
                g: Position(epoch, int(offset))
                for g, (epoch, offset) in zip(groups, positions, strict=True)
            },
            data,
        )

    def subscriber_count(self, group: str, before: int) -> int:
        return int(self._sync.zcount(self._group_base(group) + "subs", "-inf", f"({before}"))

    def deliver(self, edge_id: str, deliveries: Sequence[Deliverable]) -> None:
        if not deliveries:
            return
        body = _pack(
            [
                # A shared delivery's first item is the list of its subscriptions.
                [
                    list(d.sub_ids) if isinstance(d, SharedDelivery) else d.sub_id,
                    d.group,
                    d.epoch,
                    d.offset,
                    DeliveryKind(d.kind).value,
                    d.body,
                ]
                + ([] if d.issued_at is None else [d.issued_at])
                for d in deliveries
            ]
        )
        self._append(edge_id, b"d", body)

    def reply(self, edge_id: str, request_id: str, body: bytes) -> None:
        if not self._append(edge_id, b"r", _pack([request_id, body])):
            # The client gets "no answer" when its edge's wait times out: say why here.
            LOG.warning(
                "Reply to request %s dropped: edge %s is not registered "
                "(it stopped, or was swept after its heartbeat expired)",
                request_id,
                edge_id,
            )

    def _append(self, edge_id: str, entry_type: bytes, body: bytes) -> bool:
        """Append to the edge's stream; False if the edge is not registered (dropped)."""
        base = self._edge_base(edge_id)
        return bool(
            self._scripts["deliver"](
                keys=[self._edges_key, base + "stream"],
                args=[edge_id, self.edge_stream_maxlen, entry_type, body],
            )
        )

    def history(self, group: str, after: int, epoch: str) -> list[Event]:
        base = self._group_base(group)
        pipe = self._sync.pipeline(transaction=True)  # meta and events of one instant
        pipe.hmget(base + "meta", ["epoch", "last"])
        pipe.xrange(base + "events", f"{max(after + 1, 0)}-1", "+")
        (current, last), entries = pipe.execute()
        if current is None or _text(current) != epoch:
            raise HistoryLost(f"Group {group!r} has a new epoch")
        events = [self._event(group, epoch, entry) for entry in entries]
        first = events[0].offset if events else int(last) + 1
        if first != after + 1:
            raise HistoryTrimmed(f"Group {group!r} no longer holds offset {after + 1}")
        return events

    def positions(self, groups: Sequence[str]) -> dict[str, Position]:
        names = list(groups)
        pipe = self._sync.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self._group_base(name) + "meta", ["epoch", "last"])
        found: dict[str, Position] = {}
        for name, (epoch, last) in zip(names, pipe.execute(), strict=True):
            if epoch is not None:
                found[name] = Position(_text(epoch), int(last or 0))
        return found

    def event_at(self, group: str, epoch: str, offset: int) -> Event:
        base = self._group_base(group)
        pipe = self._sync.pipeline(transaction=True)
        pipe.hget(base + "meta", "epoch")
        pipe.xrange(base + "events", f"{offset}-1", f"{offset}-1")
        current, entries = pipe.execute()
        if current is None or _text(current) != epoch:
            raise HistoryLost(f"Group {group!r} has a new epoch")
        if not entries:
            raise HistoryTrimmed(f"Group {group!r} no longer holds offset {offset}")
        return self._event(group, epoch, entries[0])

    @staticmethod
    def _event(group: str, epoch: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Event:
        stream_id, fields = entry
        offset = int(_text(stream_id).partition("-")[0])
        issued_at = float(fields[b"t"]) if b"t" in fields else None  # older events lack it
        kind = EventKind(_text(fields[b"k"]))
        return Event(group, epoch, offset, kind, fields[b"p"], issued_at)

    # ---- Edge side ----------------------------------------------------------

    def _client(self) -> _AsyncClient:
        """The asyncio client of the running loop (a client is bound to one loop)."""
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            for closed in [lp for lp in self._async if lp.is_closed()]:
                del self._async[closed]  # its connections cannot be closed any more
            # A blocking pool: a burst of subscribes (a thousand clients
            # reconnecting after a deploy) waits for a connection instead of
            # failing with MaxConnectionsError as the default pool does.
            pool = aredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=ASYNC_POOL_SIZE,
                timeout=ASYNC_POOL_WAIT,
                # Above the reader's XREAD BLOCK, so a blocked read is no timeout.
                socket_timeout=READ_BLOCK_MS / 1000 + 5,
                socket_connect_timeout=5,
                socket_keepalive=True,
                health_check_interval=30,
                # Everything the edge sends may run twice harmlessly.
                retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            )
            client = aredis.Redis(connection_pool=pool)
            scripts = {name: client.register_script(src) for name, src in _SOURCES.items()}
            found = self._async[loop] = _AsyncClient(client, scripts)
        return found

    async def register(
        self, edge_id: str, sub_id: str, groups: Sequence[str], data: Any
    ) -> dict[str, Position]:
        _check_edge_id(edge_id)
        names = list(dict.fromkeys(groups))
        bases = [self._group_base(g) for g in names]
        keys = [self._edges_key, self._edge_base(edge_id) + "subs"]
        for base in bases:
            keys += [base + "meta", base + "events", base + "subs"]
        args: list[Any] = [
            edge_id,
            sub_id,
            _pack([names, bases]),
            _pack(data),
            self.heartbeat_ttl,
            self._history_ttl_ms,
            *(uuid.uuid4().hex for _ in names),
        ]
        reply = await self._client().scripts["register"](keys=keys, args=args)
        edge = self._edges.get(edge_id)
        if edge is not None:
            self._seen(edge_id, edge, added=bool(reply[0]))
        return {
            name: Position(_text(reply[1 + 2 * i]), int(reply[2 + 2 * i]))
            for i, name in enumerate(names)
        }

    async def unregister(self, edge_id: str, sub_id: str) -> None:
        await self._client().scripts["unregister"](
            keys=[self._edge_base(edge_id) + "subs"],
            args=[edge_id, sub_id, self._history_ttl_ms],
        )

    def attach_edge(
        self,
        edge_id: str,
        sink: Sink,
        *,
        on_lost: Callable[[], None] | None = None,
        stats: EdgeStats | None = None,
    ) -> None:
        """Start the edge's reader and heartbeat on the running loop.

        ``on_lost`` is called (on the loop) when the edge finds its
        registrations gone (Redis lost its data, or the edge was swept after
        missing heartbeats): deliveries may have been dropped meanwhile, and
        the edge must register its subscriptions again. ``stats`` is called
        at each heartbeat; what it returns replaces the edge's info hash.
        """
        _check_edge_id(edge_id)
        loop = asyncio.get_running_loop()
        edge = self._edges.get(edge_id)
        if edge is not None and edge.loop is loop:
            edge.sink, edge.on_lost, edge.stats = sink, on_lost, stats
            return
        if edge is not None:  # attached again from another loop: that one's tasks end
            self._stop_tasks(edge_id, edge, forget=False)
        edge = self._edges[edge_id] = _Edge(sink, on_lost, loop, stats=stats)
        self._client()
        try:
            # In the edges set before the first delivery can be addressed to it.
            self._scripts["heartbeat"](keys=[self._edges_key], args=[edge_id, self.heartbeat_ttl])
            edge.known = True
        except redis.RedisError as exc:
            LOG.warning("Edge %s attached while Redis is unreachable: %r", edge_id, exc)
        for name, work in (("reader", self._read), ("heartbeat", self._heartbeat)):
            task = loop.create_task(work(edge_id, edge), name=f"gqlws edge {edge_id} {name}")
            task.add_done_callback(_log_task_end)
            edge.tasks.append(task)

    def detach_edge(self, edge_id: str) -> None:
        edge = self._edges.pop(edge_id, None)
        try:
            self._scripts["forget_edge"](**self._forget_edge(edge_id, force=True))
        except redis.RedisError as exc:
            LOG.warning("Edge %s left its registrations (to be swept): %r", edge_id, exc)
        if edge is not None:
            # A heartbeat already handed to the loop's transport may reach
            # Redis after the cleanup above and add the edge back: once its
            # tasks have ended, clean up again, from the loop.
            self._stop_tasks(edge_id, edge, forget=True)

    async def aclose_edge(self, edge_id: str) -> None:
        """``detach_edge`` from the edge's loop: returns once its tasks ended and it is gone."""
        edge = self._edges.pop(edge_id, None)
        if edge is not None:
            await self._finish(edge_id, edge)
        else:
            await self._forget(edge_id)

    def _stop_tasks(self, edge_id: str, edge: _Edge, *, forget: bool) -> None:
        """End the edge's tasks, from any thread; then, with ``forget``, remove its keys."""
        edge.stopped = True
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is edge.loop:
                self._spawn_finish(edge_id, edge, forget)
            elif not edge.loop.is_closed():
                edge.loop.call_soon_threadsafe(self._spawn_finish, edge_id, edge, forget)
        except RuntimeError:
            pass  # the loop closed meanwhile: the tasks ended with it

    def _spawn_finish(self, edge_id: str, edge: _Edge, forget: bool) -> None:
        task = edge.loop.create_task(
            self._finish(edge_id, edge, forget=forget), name=f"gqlws edge {edge_id} detach"
        )
        self._finishing.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._finishing.discard)
        task.add_done_callback(_log_task_end)

    async def _finish(self, edge_id: str, edge: _Edge, *, forget: bool = True) -> None:
        edge.stopped = True
        pending = edge.tasks
        while pending:  # cancel again where a cancellation was lost (see _Edge.stopping)
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=0.1)
            pending = list(still)
        if forget:
            await self._forget(edge_id)

    async def _forget(self, edge_id: str) -> None:
        try:
            await self._client().scripts["forget_edge"](**self._forget_edge(edge_id, force=True))
        except redis.RedisError as exc:
            LOG.warning("Edge %s left its registrations (to be swept): %r", edge_id, exc)

    def _seen(self, edge_id: str, edge: _Edge, *, added: bool) -> None:
        """Note that the edge is in the edges set; ``added``: it was missing."""
        if added and edge.known:
            LOG.warning("Edge %s lost its registrations; asking it to register again", edge_id)
            edge.reread = True
            if edge.on_lost is not None:
                # Not from inside register(): the edge re-registers on its own time.
                edge.loop.call_soon(self._call_on_lost, edge_id, edge.on_lost)
        edge.known = True

    @staticmethod
    def _call_on_lost(edge_id: str, on_lost: Callable[[], None]) -> None:
        try:
            on_lost()
        except Exception:
            LOG.exception("on_lost of edge %s failed", edge_id)

    async def _read(self, edge_id: str, edge: _Edge) -> None:
        """Hand every entry of the edge's stream to its sink, in order, and trim what was read.

        The trim is a round trip of its own: after every read it doubled the
        edge's Redis commands under light load (a query's reply is one
        entry, read alone). Read entries are trimmed at most every
        ``TRIM_INTERVAL`` seconds, and whenever a read finds nothing new.
        """
        client = self._client().client
        stream = self._edge_base(edge_id) + "stream"
        # From the beginning: entries appended between attach and the first
        # read are there, and an edge id is never reused.
        last: bytes | str = "0-0"
        untrimmed, trimmed_at = False, time.monotonic()
        outage = _Outage(f"Reader of edge {edge_id}")
        while True:
            if edge.stopping():
                raise asyncio.CancelledError
            if edge.reread:
                edge.reread, last = False, "0-0"
            try:
                found: Any = await client.xread(
                    {stream: last}, count=READ_COUNT, block=READ_BLOCK_MS
                )
                if found and not edge.stopping():
                    entries = found[0][1]
                    last = entries[-1][0]
                    self._hand_over(edge_id, edge, entries)
                    untrimmed = True
                now = time.monotonic()
                if untrimmed and (not found or now - trimmed_at >= TRIM_INTERVAL):
                    await client.xtrim(stream, minid=_next_id(last), approximate=False)
                    untrimmed, trimmed_at = False, now
                outage.over()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis may have restarted with a new, empty stream: what is
                # in the stream is unread, or read in the last trim interval,
                # so read it from the start. What comes twice is dropped:
                # deliveries by their offsets, replies nobody waits for.
                last = "0-0"
                await asyncio.sleep(outage.failed(exc))

    def _hand_over(
        self, edge_id: str, edge: _Edge, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> None:
        batch: list[Delivery | SharedDelivery | Reply] = []
        for stream_id, fields in entries:
            try:
                batch.extend(_decode_entry(fields))
            except Exception:
                LOG.exception("Edge %s: dropped a malformed stream entry %r", edge_id, stream_id)
        if batch:
            try:
                edge.sink(batch)
            except Exception:
                LOG.exception("The sink of edge %s failed", edge_id)

    async def _heartbeat(self, edge_id: str, edge: _Edge) -> None:
        scripts = self._client().scripts
        outage = _Outage(f"Heartbeat of edge {edge_id}")
        while True:
            if edge.stopping():
                raise asyncio.CancelledError
            try:
                added = await scripts["heartbeat"](**self._beat(edge_id, edge))
                if edge.stopping():
                    raise asyncio.CancelledError
                self._seen(edge_id, edge, added=bool(added))
                await self.asweep_dead_edges()
                outage.over()
                delay = self.heartbeat_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = min(outage.failed(exc), self.heartbeat_interval)
            await asyncio.sleep(delay)

    def _beat(self, edge_id: str, edge: _Edge) -> dict[str, Any]:
        """The keys and arguments of one heartbeat, with the edge's stats if it has any."""
        keys: list[str] = [self._edges_key]
        args: list[Any] = [edge_id, self.heartbeat_ttl]
        if edge.stats is not None:
            try:
                info = edge.stats()
            except Exception:
                # The beat itself matters more than what it tells operators.
                LOG.exception("The stats of edge %s failed", edge_id)
            else:
                keys.append(self._edge_base(edge_id) + "info")
                for name, value in info.items():
                    # Redis takes strings; a bool would be refused (redis-py's DataError).
                    shown = int(value) if isinstance(value, bool) else value
                    args += [name, str(shown)]
        return {"keys": keys, "args": args}

    def sweep_dead_edges(self) -> list[str]:
        """Remove the edges whose heartbeat expired, with their registrations; their ids."""
        swept = []
        for raw in self._scripts["expired_edges"](keys=[self._edges_key], args=[SWEEP_BATCH]):
            edge_id = _text(raw)
            if self._scripts["forget_edge"](**self._forget_edge(edge_id, force=False)):
                swept.append(edge_id)
        if swept:
            LOG.warning("Swept dead edges: %s", ", ".join(swept))
        return swept

    async def asweep_dead_edges(self) -> list[str]:
        """``sweep_dead_edges`` on the running loop (what heartbeats run)."""
        scripts = self._client().scripts
        swept = []
        for raw in await scripts["expired_edges"](keys=[self._edges_key], args=[SWEEP_BATCH]):
            edge_id = _text(raw)
            if await scripts["forget_edge"](**self._forget_edge(edge_id, force=False)):
                swept.append(edge_id)
        if swept:
            LOG.warning("Swept dead edges: %s", ", ".join(swept))
        return swept

    # ---- Lifetime -------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the running loop's client (after its edges were detached)."""
        loop = asyncio.get_running_loop()
        finishing = [task for task in self._finishing if task.get_loop() is loop]
        await asyncio.gather(*finishing, return_exceptions=True)  # detaches still cleaning up
        found = self._async.pop(loop, None)
        if found is not None:
            await found.client.aclose()

    def close(self) -> None:
        """Close the sync client's connections."""
        self._sync.close()


def _decode_entry(fields: dict[bytes, bytes]) -> list[Delivery | SharedDelivery | Reply]:
    entry_type, body = fields[b"t"], _unpack(fields[b"b"])
    if entry_type == b"r":
        request_id, reply_body = body
        return [Reply(request_id, reply_body)]
    # A seventh item, when present, is the event's issue time (older senders omit it).
    decoded: list[Delivery | SharedDelivery | Reply] = []
    for sub_id, group, epoch, offset, kind, item, *issued_at in body:
        rest = (group, epoch, int(offset), DeliveryKind(kind), item, *issued_at[:1])
        if isinstance(sub_id, list):  # shared: the list of its subscriptions
            decoded.append(SharedDelivery(tuple(sub_id), *rest))
        else:
            decoded.append(Delivery(sub_id, *rest))
    return decoded
