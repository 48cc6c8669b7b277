"""The Celery app of the gqlws workers."""

from __future__ import annotations

import logging
import os

import django
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
django.setup()

from django.conf import settings as django_settings  # noqa: E402

from gqlws import kombu_redis, ops, runtime  # noqa: E402
from gqlws.settings import get_settings  # noqa: E402

app = Celery("gqlws")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = get_settings().CELERY_QUEUE
# One Redis client per channel, not one per command (receipt, acknowledgement).
kombu_redis.use_for(app)
# Results travel through the edges' streams, never a result backend.
app.conf.task_ignore_result = True
# One task at a time per process: a fan-out chunk is short, and prefetching
# more would keep work away from idle workers (and lose it with this one).
app.conf.worker_prefetch_multiplier = 1
app.conf.include = ["workers.tasks"]
# Requests carry bytes (scope snapshots, payloads): edges send them as msgpack.
app.conf.accept_content = sorted({*app.conf.accept_content, "msgpack", "json"})
# Stopping (SIGTERM from a deploy). Celery's SIGTERM is a *warm* shutdown:
# no new task, and the running ones finish, however long they take, unless
# the process manager's SIGKILL cuts them first (its grace period, e.g.
# compose's stop_grace_period, must cover the longest task). With
# REMAP_SIGTERM=SIGQUIT in the worker's environment (billiard reads it when
# celery starts, before this module: it cannot be set from here), SIGTERM is
# instead a cold shutdown that begins with a *soft* one, bounded by the values
# below: running tasks get worker_soft_shutdown_timeout seconds to finish;
# then, with the prefork pool, those still running are cancelled, and the
# late-acknowledged ones (fan-out chunks, renotify) go back to the broker for
# another worker (edges drop what then arrives twice, by offset). The threads
# pool (what docker-compose.yml and tests/cluster.py run) cannot cancel a
# thread: its tasks finish either way, so it is best left on the warm
# shutdown. "On idle": the soft phase runs even when no task is running, so
# that messages reserved but not started are handed back before the worker's
# connection goes (a stop then always lasts the whole timeout). Project
# settings win: CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT, ..._ON_IDLE.
SOFT_SHUTDOWN = {"worker_soft_shutdown_timeout": 10.0, "worker_enable_soft_shutdown_on_idle": True}
for _key, _value in SOFT_SHUTDOWN.items():
    if not hasattr(django_settings, f"CELERY_{_key.upper()}"):
        app.conf[_key] = _value
# Celery logs two INFO lines per task ("received", "succeeded"): here, per
# GraphQL query and per fan-out chunk, ~5% of a worker's time on the query
# path (measured), and noise beside the edges' operation log. Failures are
# still logged (ERROR). A project that wants the lines back gives these
# loggers a level in its LOGGING; a level set there is kept.
for _name in ("celery.worker.strategy", "celery.app.trace"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)
# Metrics on GQLWS["WORKER_METRICS_PORT"], served by the main process once the
# pool is up (prefork children write to PROMETHEUS_MULTIPROC_DIR: gqlws.ops).
worker_ready.connect(ops.start_worker_metrics_server, weak=False)
worker_process_shutdown.connect(ops.mark_process_dead, weak=False)
# A worker renders fan-outs like an edge: the same collector tuning
# (GQLWS["TUNE_GC"]), in the main process (threads pool) and in each
# prefork child.
worker_ready.connect(runtime.tune_gc_signal, weak=False)
worker_process_init.connect(runtime.tune_gc_signal, weak=False)
