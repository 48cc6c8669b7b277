"""Operating gqlws: metrics and health over HTTP, on edges and on Celery workers.

Edges serve HTTP already (Django behind Daphne or uvicorn), so their
metrics and probes are Django views. Mount them all at once, at the paths
of the ``GQLWS`` setting (``METRICS_PATH`` ``/metrics``, ``LIVENESS_PATH``
``/healthz``, ``READINESS_PATH`` ``/readyz``; None leaves one out)::

    from gqlws import ops

    urlpatterns = [..., *ops.urls()]

Workers serve no HTTP: with ``GQLWS["WORKER_METRICS_PORT"]`` set, the
``workers`` Celery app starts ``prometheus_client``'s own HTTP server on
that port (address ``WORKER_METRICS_ADDR``) once the worker is ready
(``start_worker_metrics_server``), in the worker's main process. With the
prefork pool the tasks run in child processes: set
``PROMETHEUS_MULTIPROC_DIR`` (see ``gqlws.metrics``) or the main process
will serve its own, empty, counters; a child that exits is marked dead
(``mark_process_dead``) so its gauges stop counting.

Worker health stays Celery's own: ``celery -A workers inspect ping``.

Metrics are served as-is to whoever asks: bind them to an internal
network, or keep the path away from the public load balancer (they name
Subscription classes and close codes, nothing of users).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from . import health, metrics, runtime

__all__ = [
    "mark_process_dead",
    "metrics_view",
    "start_worker_metrics_server",
    "stop_worker_metrics_server",
    "urls",
]

LOG = logging.getLogger(__name__)

_server_lock = threading.Lock()
_server: Any = None


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics of this process (or of every process sharing the multiprocess dir)."""
    response = HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def urls() -> list[URLPattern]:
    """URL patterns of the metrics and health views, at the paths the settings name."""
    settings = runtime.settings()
    views = [
        (settings.METRICS_PATH, metrics_view, "gqlws-metrics"),
        (settings.LIVENESS_PATH, health.liveness, "gqlws-liveness"),
        (settings.READINESS_PATH, health.readiness, "gqlws-readiness"),
    ]
    # Django's routes have no leading slash; the settings say what a client requests.
    return [path(route.lstrip("/"), view, name=name) for route, view, name in views if route]


def start_worker_metrics_server(**_signal: Any) -> int | None:
    """Serve this worker's metrics on ``WORKER_METRICS_PORT``; the port, or None if unset.

    Connected to Celery's ``worker_ready`` by the ``workers`` app (the keyword
    arguments are the signal's). Idempotent: a second call keeps the first server.
    """
    global _server
    settings = runtime.settings()
    port = settings.WORKER_METRICS_PORT
    if port is None:
        return None
    with _server_lock:
        if _server is None:
            _server, _ = start_http_server(
                port, settings.WORKER_METRICS_ADDR, registry=metrics.registry()
            )
            LOG.info(
                "Worker metrics on http://%s:%d/metrics%s",
                settings.WORKER_METRICS_ADDR,
                port,
                " (all processes)" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "",
            )
        return int(_server.server_address[1])


def stop_worker_metrics_server() -> None:
    """Stop the server ``start_worker_metrics_server`` started (tests, shutdown)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()


def mark_process_dead(pid: int | None = None, **_signal: Any) -> None:
    """Forget the live gauges of an exiting process (a prefork child), in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid if pid is not None else os.getpid())
