"""Health of an edge: liveness (``/healthz``) and readiness (``/readyz``) probes.

Two questions, two endpoints, as Kubernetes and Compose ask them:

* **liveness**: does the process answer at all? ``200 {"status": "ok"}``
  from any edge whose server and Django still serve HTTP. Restart it if not.
* **readiness**: should the load balancer send it new connections? ``503``
  while the edge is draining (SIGTERM: ``gqlws.drain``) and, in distributed
  mode, while Redis does not answer a ``PING`` within
  ``GQLWS["READINESS_TIMEOUT"]`` seconds; ``200`` otherwise. The body names
  every reason::

      {"status": "unavailable", "reasons": ["draining", "redis: Error 111 ..."]}

Readiness deliberately asks nothing of the Celery workers: an edge whose
fleet is busy still serves its open sockets, and taking every edge out of
the balancer because the workers are slow would turn a slowdown into an
outage. Workers have their own check (``celery inspect ping``).

The Redis ``PING`` runs in a thread, with short socket timeouts and no
retries, so a probe never blocks the event loop that serves WebSockets and
never takes longer than its timeout. Mount the views with ``gqlws.ops.urls()``
(metrics included), or alone::

    path("healthz", gqlws.health.liveness),
    path("readyz", gqlws.health.readiness),
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from django.http import HttpRequest, HttpResponse

from . import drain, runtime

__all__ = ["liveness", "readiness", "unready_reasons"]


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    response = HttpResponse(
        json.dumps(body), status=status, content_type="application/json; charset=utf-8"
    )
    response["Cache-Control"] = "no-store"
    return response


def liveness(request: HttpRequest) -> HttpResponse:
    """200 while the process answers."""
    return _json(200, {"status": "ok"})


async def readiness(request: HttpRequest) -> HttpResponse:
    """200 when this edge should get new connections; 503 with the reasons when not."""
    reasons = await unready_reasons()
    if reasons:
        return _json(503, {"status": "unavailable", "reasons": reasons})
    return _json(200, {"status": "ok"})


async def unready_reasons() -> list[str]:
    """Why this edge should not get new connections now; empty when it should."""
    reasons = []
    if drain.draining():
        reasons.append("draining")
    settings = runtime.settings()
    if settings.REDIS_URL is not None:
        error = await _ping(settings.REDIS_URL, settings.READINESS_TIMEOUT)
        if error is not None:
            reasons.append(f"redis: {error}")
    return reasons


async def _ping(url: str, timeout: float) -> str | None:
    """None if Redis answered PING within ``timeout``, else what went wrong."""
    client = _client(url, timeout)
    try:
        # The client's socket timeouts end the thread; wait_for bounds the
        # probe even if connecting hangs in DNS, which no socket timeout covers.
        await asyncio.wait_for(asyncio.to_thread(client.ping), timeout * 2)
    except asyncio.TimeoutError:
        return f"no answer to PING in {timeout:g} s"
    except Exception as error:
        return str(error) or type(error).__name__
    return None


@functools.lru_cache(maxsize=4)
def _client(url: str, timeout: float) -> Any:
    """A client for probes only: short timeouts, no retries, its own small pool.

    Not the fabric's client: that one retries with backoff (right for work
    that must get through, wrong for a probe that must answer quickly).
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=4,
    )
