"""What a Redis fabric holds right now: edges, their registrations, group streams.

For operators (``manage.py gqlws status``), not for the hot path: it walks
the keys of the data model of ``broadcast.redis`` with cursors (``SCAN``,
``HSCAN``), so Redis is never blocked by one long command, but the whole
walk is O(keys + registrations). Everything comes from one client, at
about the same time, without a transaction: counts taken a few
milliseconds apart may disagree by the subscriptions that came or went
meanwhile.

What is read, per the data model:

* ``edges`` (score: heartbeat expiry) and each edge's ``info`` hash (what
  the edge published at its last heartbeat: ``beat`` on Redis's clock, then
  the edge's own stats), ``subs`` hash (its registrations) and ``stream``
  (deliveries not read yet);
* every group with a ``meta`` or a ``subs`` key: epoch, last offset, the
  length of its history and how many subscriptions are registered in it.

How to use it::

    state = inspect_fabric(RedisFabric(url))
    for edge in state.edges:
        print(edge.edge_id, edge.info.get("connections"), edge.subscriptions)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .redis import RedisFabric

__all__ = ["EdgeState", "FabricState", "GroupState", "inspect_fabric"]

#: Keys and hash fields fetched per cursor step.
_SCAN_COUNT = 500
_UNESCAPE = {"%25": "%", "%7B": "{", "%7D": "}"}


@dataclass(frozen=True)
class EdgeState:
    """One edge of the ``edges`` set."""

    edge_id: str
    #: Seconds until its heartbeat expires; negative: expired, about to be swept.
    expires_in: float
    #: Seconds since its last heartbeat that published info; None: no info (yet, or expired).
    beat_age: float | None
    #: What the edge published about itself (connections, pid...), as strings.
    info: dict[str, str]
    #: Subscriptions it has registered (its ``subs`` hash).
    subscriptions: int
    #: Entries in its stream: deliveries and replies it has not read yet.
    stream_length: int
    #: How many of its subscriptions are in each set of groups.
    group_sets: Counter[tuple[str, ...]] = field(default_factory=Counter)


@dataclass(frozen=True)
class GroupState:
    """One group with a stream or registered subscribers."""

    group: str
    #: The lifetime of its stream; None once the stream expired (or never existed).
    epoch: str | None
    #: The last offset issued in this epoch.
    last_offset: int
    #: Events kept in its history (for gap filling and resume).
    stream_length: int
    #: Subscriptions registered in it (members of its ``subs`` set).
    subscriptions: int


@dataclass(frozen=True)
class FabricState:
    """Everything ``inspect_fabric`` read; ``time`` is Redis's clock when it began."""

    time: float
    edges: list[EdgeState]
    groups: list[GroupState]


def inspect_fabric(fabric: RedisFabric) -> FabricState:
    """Read the state of ``fabric``'s Redis (raises ``redis.RedisError`` if unreachable)."""
    client = fabric._sync
    seconds, micros = client.time()
    now = seconds + micros / 1_000_000
    edges = [_edge(fabric, _text(member), score, now) for member, score in _edge_scores(fabric)]
    referenced = {name for edge in edges for groups in edge.group_sets for name in groups}
    names = set(referenced)
    pattern = _glob_escape(fabric.prefix) + ":{g:*}:*"
    for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        name = _group_of(fabric.prefix, _text(key))
        if name is not None:
            names.add(name)
    groups = [_group(fabric, name) for name in sorted(names)]
    # A group whose stream expired leaves idempotency keys behind for a
    # while: nothing an operator needs to see.
    groups = [g for g in groups if g.epoch or g.subscriptions or g.group in referenced]
    return FabricState(now, edges, groups)


def _edge_scores(fabric: RedisFabric) -> list[tuple[bytes, float]]:
    found: list[tuple[bytes, float]] = fabric._sync.zrange(  # type: ignore[assignment]
        fabric._edges_key, 0, -1, withscores=True
    )
    return found


def _edge(fabric: RedisFabric, edge_id: str, expiry: float, now: float) -> EdgeState:
    client = fabric._sync
    base = fabric._edge_base(edge_id)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(base + "info")
    pipe.hlen(base + "subs")
    pipe.xlen(base + "stream")
    raw_info, subscriptions, stream_length = pipe.execute()
    info = {_text(k): _text(v) for k, v in raw_info.items()}
    beat = info.pop("beat", None)
    group_sets: Counter[tuple[str, ...]] = Counter()
    for _sub_id, record in client.hscan_iter(base + "subs", count=_SCAN_COUNT):
        group_sets[_record_groups(record)] += 1
    return EdgeState(
        edge_id=edge_id,
        expires_in=expiry - now,
        beat_age=None if beat is None else max(0.0, now - float(beat)),
        info=info,
        subscriptions=int(subscriptions),
        stream_length=int(stream_length),
        group_sets=group_sets,
    )


def _record_groups(record: bytes) -> tuple[str, ...]:
    """The groups of a registration record (its first msgpack object; the rest is not read)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(record)
    groups, _bases = next(unpacker)
    return tuple(groups)


def _group(fabric: RedisFabric, name: str) -> GroupState:
    base = fabric._group_base(name)
    pipe = fabric._sync.pipeline(transaction=False)
    pipe.hmget(base + "meta", ["epoch", "last"])
    pipe.xlen(base + "events")
    pipe.zcard(base + "subs")
    (epoch, last), stream_length, subscriptions = pipe.execute()
    return GroupState(
        group=name,
        epoch=None if epoch is None else _text(epoch),
        last_offset=int(last or 0),
        stream_length=int(stream_length),
        subscriptions=int(subscriptions),
    )


def _group_of(prefix: str, key: str) -> str | None:
    """The group a key belongs to (``<prefix>:{g:<escaped>}:<suffix>``); None if not one."""
    head = prefix + ":{g:"
    end = key.find("}:", len(head))  # escaped names hold no brace: the first one ends the tag
    if not key.startswith(head) or end < 0:
        return None
    return re.sub("%(25|7B|7D)", lambda m: _UNESCAPE[m.group(0)], key[len(head) : end])


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
