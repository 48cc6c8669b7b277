"""The ``GQLWS`` Django setting: one dict, read once, every key with a default.

Embedded mode is what you get with nothing configured. Distributed mode is
switched on by a Redis URL (and a Celery broker, configured the way Celery
documents for Django: ``CELERY_BROKER_URL`` with the ``CELERY_`` namespace)::

    GQLWS = {
        "REDIS_URL": "redis://redis:6379/0",
    }
    CELERY_BROKER_URL = "redis://redis:6379/1"

A wrong value is rejected at start-up with a message naming the key, what
it holds and what it should hold: ``ImproperlyConfigured``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["Settings", "get_settings", "reset_settings"]


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _optional_url(value: Any) -> bool:
    return value is None or (
        isinstance(value, str) and value.startswith(("redis://", "rediss://", "unix://"))
    )


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and " " not in value


def _optional_path(value: Any) -> bool:
    return value is None or (
        isinstance(value, str) and len(value) > 1 and value.startswith("/") and " " not in value
    )


def _optional_port(value: Any) -> bool:
    return value is None or (_positive_int(value) and value < 65536)


@dataclass(frozen=True)
class Settings:
    """The effective ``GQLWS`` setting."""

    #: Redis for the fabric; set: distributed mode. None: embedded mode.
    REDIS_URL: str | None = None
    #: Prefix of every Redis key gqlws writes.
    KEY_PREFIX: str = "gqlws"
    #: Events kept per group for gap filling and resume.
    HISTORY_LENGTH: int = 1000
    #: Seconds a group's stream outlives its last event.
    HISTORY_TTL: float = 3600.0
    #: Seconds between an edge's heartbeats.
    EDGE_HEARTBEAT_INTERVAL: float = 2.0
    #: Seconds without heartbeat after which an edge is dead and swept.
    EDGE_HEARTBEAT_TTL: float = 10.0
    #: Seconds an edge waits for a missing offset before filling it from history.
    GAP_WAIT: float = 0.5
    #: Seconds an edge waits for a worker's answer to a query or mutation.
    OPERATION_TIMEOUT: float = 60.0
    #: Subscribers computed by one fan-out task; bigger groups are split.
    FANOUT_CHUNK_SIZE: int = 256
    #: Celery queue of gqlws tasks.
    CELERY_QUEUE: str = "gqlws"
    #: Seconds a draining edge (SIGTERM) lets running operations finish before closing.
    DRAIN_GRACE: float = 5.0
    #: Bytes Daphne may buffer for a client that does not read before dropping it.
    MAX_SEND_BUFFER: int = 4 << 20
    #: Where an edge serves its Prometheus metrics (``gqlws.ops.urls()``); None: nowhere.
    METRICS_PATH: str | None = "/metrics"
    #: Liveness probe of an edge: 200 while the process answers.
    LIVENESS_PATH: str | None = "/healthz"
    #: Readiness probe: 503 while Redis does not answer or the edge drains.
    READINESS_PATH: str | None = "/readyz"
    #: Seconds the readiness probe waits for Redis to answer its PING.
    READINESS_TIMEOUT: float = 1.0
    #: Port of a Celery worker's own metrics HTTP server; None: no server.
    WORKER_METRICS_PORT: int | None = None
    #: Address that server binds (all interfaces: what a container needs).
    WORKER_METRICS_ADDR: str = "0.0.0.0"
    #: Put payloads, variables, close reasons and error messages in log records (debugging
    #: only: they may hold tokens and personal data). Off: ids, codes and counts only.
    LOG_PAYLOADS: bool = False
    #: Tune the garbage collector of a process that serves WebSockets or runs fan-out
    #: for a large long-lived heap (``gqlws.runtime.tune_gc``). False: leave it alone.
    TUNE_GC: bool = True

    @property
    def distributed(self) -> bool:
        return self.REDIS_URL is not None


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "REDIS_URL": (_optional_url, "None or a redis://, rediss:// or unix:// URL"),
    "KEY_PREFIX": (_name, "a non-empty string without spaces"),
    "HISTORY_LENGTH": (_positive_int, "a positive integer"),
    "HISTORY_TTL": (_positive_number, "a positive number of seconds"),
    "EDGE_HEARTBEAT_INTERVAL": (_positive_number, "a positive number of seconds"),
    "EDGE_HEARTBEAT_TTL": (_positive_number, "a positive number of seconds"),
    "GAP_WAIT": (_positive_number, "a positive number of seconds"),
    "OPERATION_TIMEOUT": (_positive_number, "a positive number of seconds"),
    "FANOUT_CHUNK_SIZE": (_positive_int, "a positive integer"),
    "CELERY_QUEUE": (_name, "a non-empty string without spaces"),
    "DRAIN_GRACE": (_positive_number, "a positive number of seconds"),
    "MAX_SEND_BUFFER": (_positive_int, "a positive number of bytes"),
    "METRICS_PATH": (_optional_path, "None or a URL path such as '/metrics'"),
    "LIVENESS_PATH": (_optional_path, "None or a URL path such as '/healthz'"),
    "READINESS_PATH": (_optional_path, "None or a URL path such as '/readyz'"),
    "READINESS_TIMEOUT": (_positive_number, "a positive number of seconds"),
    "WORKER_METRICS_PORT": (_optional_port, "None or a TCP port number"),
    "WORKER_METRICS_ADDR": (_name, "an IP address or host name"),
    "LOG_PAYLOADS": (_boolean, "True or False"),
    "TUNE_GC": (_boolean, "True or False"),
}


def parse(raw: Any, *, celery_broker: Any = None) -> Settings:
    """Check a ``GQLWS`` dict and return the effective settings; raise naming the problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"GQLWS must be a dict, got {type(raw).__name__}")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ImproperlyConfigured(
            f"GQLWS has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    for key, value in raw.items():
        check, expected = _CHECKS[key]
        if not check(value):
            raise ImproperlyConfigured(f"GQLWS[{key!r}] must be {expected}, got {value!r}")
    settings = Settings(**raw)
    if settings.EDGE_HEARTBEAT_TTL <= settings.EDGE_HEARTBEAT_INTERVAL:
        raise ImproperlyConfigured(
            "GQLWS['EDGE_HEARTBEAT_TTL'] must be longer than GQLWS['EDGE_HEARTBEAT_INTERVAL'] "
            f"({settings.EDGE_HEARTBEAT_TTL} <= {settings.EDGE_HEARTBEAT_INTERVAL})"
        )
    if settings.distributed and not celery_broker:
        raise ImproperlyConfigured(
            "GQLWS['REDIS_URL'] switches on distributed mode, which runs operations on "
            "Celery workers: set CELERY_BROKER_URL too"
        )
    return settings


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The effective settings of this process, read once from Django's settings."""
    from django.conf import settings as django_settings

    return parse(
        getattr(django_settings, "GQLWS", None),
        celery_broker=getattr(django_settings, "CELERY_BROKER_URL", None),
    )


def reset_settings() -> None:
    """Forget the settings read (tests that change them)."""
    get_settings.cache_clear()
