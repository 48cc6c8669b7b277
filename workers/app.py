"""The Celery app of the gqlws workers."""

from __future__ import annotations

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
django.setup()

from gqlws.settings import get_settings  # noqa: E402

app = Celery("gqlws")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = get_settings().CELERY_QUEUE
# Results travel through the edges' streams, never a result backend.
app.conf.task_ignore_result = True
# One task at a time per process: a fan-out chunk is short, and prefetching
# more would keep work away from idle workers (and lose it with this one).
app.conf.worker_prefetch_multiplier = 1
app.conf.include = ["workers.tasks"]
# Requests carry bytes (scope snapshots, payloads): edges send them as msgpack.
app.conf.accept_content = sorted({*app.conf.accept_content, "msgpack", "json"})
