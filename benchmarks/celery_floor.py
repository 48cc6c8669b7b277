"""The floor of the Celery path: a task that does nothing but answer through Redis.

``benchmarks.query_latency`` runs a worker of this app beside the
distributed topology and times ``send_task`` of ``floor.echo`` until its
answer is popped from a Redis list: what Celery and Redis cost on this
machine for one round trip through a worker, with gqlws's settings (threads
pool, msgpack, early acknowledgement, no result backend, the Redis
transport of ``gqlws.kombu_redis``) and nothing of
gqlws, GraphQL or WebSockets.

    celery -A benchmarks.celery_floor worker --pool=threads   # with FLOOR_REDIS_URL set
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from gqlws import kombu_redis

app = Celery("floor", broker=os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_ignore_result = True
app.conf.worker_prefetch_multiplier = 1
app.conf.accept_content = ["msgpack", "json"]
app.conf.task_default_queue = "floor"
kombu_redis.use_for(app)

_answers = redis.Redis.from_url(app.conf.broker_url)


@app.task(name="floor.echo", acks_late=False)
def echo(key: str, body: bytes) -> None:
    _answers.lpush(key, body)
