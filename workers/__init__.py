"""Celery glue of gqlws (distributed mode): ``celery -A workers worker``.

The app is configured from Django's settings the way Celery documents for
Django (``CELERY_`` namespace: ``CELERY_BROKER_URL``...), and runs the
tasks of ``workers.tasks``: queries and mutations, subscription callbacks,
and the fan-out of broadcast events. Set ``DJANGO_SETTINGS_MODULE`` (your
project's settings) in the worker's environment.
"""

from __future__ import annotations

from .app import app

__all__ = ["app"]
