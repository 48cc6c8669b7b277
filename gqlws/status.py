"""``manage.py gqlws status``: the edges, subscriptions and streams of a deployment.

What it shows, read from Redis (``broadcast.inspection``):

* **edges**: every edge in the fabric with what it published at its last
  heartbeat (host, pid, uptime, open connections, draining), the age of
  that heartbeat, its registered subscriptions and the length of its
  stream (deliveries it has not read yet: a number that keeps growing
  means an edge that does not keep up);
* **subscriptions** per ``Subscription`` class and per group: a group name
  is ``module.Class/group`` (``module.Class`` for the class's default
  group), so both are read off the name;
* **groups**: epoch, last offset and history length of each group's stream.

In embedded mode (no ``GQLWS["REDIS_URL"]``) everything lives inside the
server process, out of reach of another process: the command says so and
exits 0.

How to use it::

    python manage.py gqlws status           # tables
    python manage.py gqlws status --json    # one JSON document, the same facts

and from Python: ``collect()`` returns the JSON document as a dict,
``render(collect())`` the tables.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import runtime
from .settings import Settings

if TYPE_CHECKING:  # not at run time: embedded mode needs no redis package
    from broadcast.inspection import EdgeState, FabricState

__all__ = ["EMBEDDED_MESSAGE", "FabricUnreachable", "collect", "render", "report"]

EMBEDDED_MESSAGE = (
    "gqlws runs in embedded mode (GQLWS['REDIS_URL'] is not set): connections and "
    "subscriptions live inside each server process and cannot be read from another "
    "process. Set GQLWS['REDIS_URL'] for the distributed mode, whose state this command shows."
)
#: Rows of the groups table by default (the JSON holds them all).
GROUPS_SHOWN = 50


class FabricUnreachable(RuntimeError):
    """Redis could not be read (down, wrong URL, refused credentials)."""


def collect(settings: Settings | None = None) -> dict[str, Any]:
    """The status document of the deployment ``settings`` describe (this process's by default).

    Raises ``FabricUnreachable`` if Redis cannot be read.
    """
    settings = settings or runtime.settings()
    if not settings.distributed:
        return {"mode": "embedded", "message": EMBEDDED_MESSAGE}
    import redis

    from broadcast.inspection import inspect_fabric
    from broadcast.redis import RedisFabric

    assert settings.REDIS_URL is not None
    fabric = RedisFabric(
        settings.REDIS_URL,
        prefix=settings.KEY_PREFIX,
        heartbeat_interval=settings.EDGE_HEARTBEAT_INTERVAL,
        heartbeat_ttl=settings.EDGE_HEARTBEAT_TTL,
    )
    try:
        state = inspect_fabric(fabric)
    except redis.RedisError as error:
        raise FabricUnreachable(f"Cannot read {_without_password(fabric.url)}: {error}") from error
    finally:
        fabric.close()
    return report(state, redis_url=settings.REDIS_URL, prefix=settings.KEY_PREFIX)


def report(state: FabricState, *, redis_url: str, prefix: str) -> dict[str, Any]:
    """The status document of a ``broadcast.inspection.FabricState``."""
    edges = [_edge(edge) for edge in state.edges]
    per_class: Counter[str] = Counter()
    for edge in state.edges:
        for names, count in edge.group_sets.items():
            # One subscription, one class: all its groups are named by its class.
            per_class[split_group(names[0])[0]] += count
    groups = []
    groups_per_class: Counter[str] = Counter()
    for group in state.groups:
        class_name, name = split_group(group.group)
        groups_per_class[class_name] += 1
        groups.append(
            {
                "name": group.group,
                "class": class_name,
                "group": name,
                "subscriptions": group.subscriptions,
                "epoch": group.epoch,
                "last_offset": group.last_offset,
                "stream_length": group.stream_length,
            }
        )
    classes = [
        {"class": name, "subscriptions": per_class[name], "groups": groups_per_class[name]}
        for name in sorted(set(per_class) | set(groups_per_class))
    ]
    return {
        "mode": "distributed",
        "redis": _without_password(redis_url),
        "prefix": prefix,
        "time": round(state.time, 3),
        "edges": edges,
        "classes": classes,
        "groups": groups,
        "totals": {
            "edges": len(edges),
            "connections": sum(edge["connections"] or 0 for edge in edges),
            "subscriptions": sum(edge["subscriptions"] for edge in edges),
            "groups": len(groups),
        },
    }


def split_group(name: str) -> tuple[str, str | None]:
    """``("module.Class", "group")`` of a group name; the group is None for the default one."""
    class_name, slash, group = name.partition("/")
    return class_name, (group if slash else None)


def _edge(edge: EdgeState) -> dict[str, Any]:
    info = edge.info
    started = _number(info.get("started"), float)
    if edge.expires_in < 0:
        state = "expired"  # no heartbeat for its TTL: the next sweep removes it
    elif info.get("draining") == "1":
        state = "draining"
    else:
        state = "live"
    return {
        "id": edge.edge_id,
        "state": state,
        "host": info.get("host"),
        "pid": _number(info.get("pid"), int),
        "started": started,
        "uptime": None if started is None else round(max(0.0, time.time() - started), 1),
        "heartbeat_age": None if edge.beat_age is None else round(edge.beat_age, 3),
        "connections": _number(info.get("connections"), int),
        "subscriptions": edge.subscriptions,
        "stream_length": edge.stream_length,
    }


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    try:
        return None if text is None else kind(text)
    except ValueError:
        return None


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


# ---- The tables -------------------------------------------------------------


def render(status: dict[str, Any], *, groups_shown: int | None = GROUPS_SHOWN) -> str:
    """The status document as text tables (``groups_shown``: None for every group)."""
    if status["mode"] != "distributed":
        return str(status["message"])
    totals = status["totals"]
    lines = [
        f"gqlws status: distributed mode, Redis {status['redis']}, key prefix {status['prefix']!r}",
        f"{totals['edges']} edges, {totals['connections']} connections, "
        f"{totals['subscriptions']} subscriptions, {totals['groups']} groups",
        "",
        "EDGES",
    ]
    edge_rows = [
        [
            edge["id"],
            edge["state"],
            edge["host"] or "?",
            _or_dash(edge["pid"]),
            _duration(edge["uptime"]),
            _duration(edge["heartbeat_age"]),
            _or_dash(edge["connections"]),
            str(edge["subscriptions"]),
            str(edge["stream_length"]),
        ]
        for edge in status["edges"]
    ]
    headers = ["EDGE", "STATE", "HOST", "PID", "UP", "BEAT", "CONNS", "SUBS", "STREAM"]
    lines += _table(headers, edge_rows, right=set(range(3, 9))) or ["(no edge)"]
    lines += ["", "SUBSCRIPTIONS (class, then its groups)"]
    rows: list[list[str]] = []
    by_class: dict[str, list[dict[str, Any]]] = {}
    for group in status["groups"]:
        by_class.setdefault(group["class"], []).append(group)
    shown = 0
    for entry in status["classes"]:
        rows.append([entry["class"], str(entry["subscriptions"]), "", "", ""])
        for group in by_class.get(entry["class"], []):
            if groups_shown is not None and shown >= groups_shown:
                continue
            shown += 1
            name = "(default)" if group["group"] is None else group["group"]
            epoch = (group["epoch"] or "-")[:8]
            rows.append(
                [
                    f"  {name}",
                    str(group["subscriptions"]),
                    str(group["last_offset"]),
                    str(group["stream_length"]),
                    epoch,
                ]
            )
    headers = ["CLASS / GROUP", "SUBS", "LAST", "STREAM", "EPOCH"]
    lines += _table(headers, rows, right={1, 2, 3}) or ["(no subscription, no group)"]
    hidden = len(status["groups"]) - shown
    if hidden > 0:
        lines.append(f"... and {hidden} more groups (--json lists them all)")
    return "\n".join(line.rstrip() for line in lines)


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(headers), *(line(row) for row in rows)]


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
