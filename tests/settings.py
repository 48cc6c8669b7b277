"""Django settings of the test project (also served by the Daphne test processes)."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "gqlws-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "gqlws",  # checks GQLWS at start-up; `manage.py gqlws status`
    "tests.models_app",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "GQLWS_TEST_DB", os.path.join(tempfile.gettempdir(), f"gqlws-tests-{os.getpid()}.db")
        ),
    }
}
ASGI_APPLICATION = "tests.asgi.application"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "gqlws": {"handlers": ["console"], "level": "WARNING"},
        # The workers' "Task ... received" lines, which workers/app.py quiets
        # unless a project asks for them: test_drain waits for one.
        "celery.worker.strategy": {"level": "INFO"},
    },
}

# Distributed mode, when the test harness starts Redis and workers: the same
# project then runs on Daphne edges and Celery workers (tests.cluster).
if os.environ.get("GQLWS_REDIS_URL"):
    GQLWS = {
        "REDIS_URL": os.environ["GQLWS_REDIS_URL"],
        "EDGE_HEARTBEAT_INTERVAL": 0.5,
        "EDGE_HEARTBEAT_TTL": 3.0,
        "OPERATION_TIMEOUT": float(os.environ.get("GQLWS_OPERATION_TIMEOUT", "20")),
    }
    CELERY_BROKER_URL = os.environ["GQLWS_REDIS_URL"]
    CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
    CELERY_TASK_SERIALIZER = "msgpack"
