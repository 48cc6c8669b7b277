"""Settings of the example chat.

Embedded by default: sqlite, no Redis, no Celery. Everything else comes from
the environment, so the same project runs distributed (docker-compose.yml):

* ``GQLWS_REDIS_URL`` (+ ``CELERY_BROKER_URL``): distributed mode;
  ``GQLWS_WORKER_METRICS_PORT``: the port of the Celery workers' metrics;
* ``POSTGRES_HOST`` (+ ``POSTGRES_DB``, ``POSTGRES_USER``, ``POSTGRES_PASSWORD``,
  ``POSTGRES_PORT``): PostgreSQL instead of sqlite (``GQLWS_EXAMPLE_DB`` moves
  the sqlite file);
* ``DJANGO_ALLOWED_HOSTS`` (comma-separated), ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``,
  ``DJANGO_CONN_MAX_AGE`` (seconds a database connection is reused; 0: one per
  operation, as Django does per request by default);
* ``GQLWS_EXAMPLE_RATE_LIMIT``: messages per second a connection may send
  (gqlws's default, 500, in bursts of 1,000); 0 turns the limit off (the
  benchmarks do: one socket's closed loop of queries outruns it).
"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "gqlws-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
USE_TZ = True
INSTALLED_APPS = [
    "daphne",  # makes `runserver` serve the ASGI application, WebSockets included
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "gqlws",
    "example.chat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "example.urls"
ASGI_APPLICATION = "example.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]

if os.environ.get("POSTGRES_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["POSTGRES_HOST"],
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "NAME": os.environ.get("POSTGRES_DB", "gqlws"),
            "USER": os.environ.get("POSTGRES_USER", "gqlws"),
            "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("GQLWS_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
            # Edges and workers share the file: wait for a lock rather than fail.
            "OPTIONS": {"timeout": 20},
        }
    }
    if django.VERSION >= (5, 1):  # SQLite's init_command option came with Django 5.1
        # Write-ahead log: readers do not wait for a writer, and a commit is
        # one append instead of a journal file rewritten and synced each time
        # (every chat message is a commit).
        DATABASES["default"]["OPTIONS"]["init_command"] = (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        )
# Persistent connections: each pool thread (and worker) keeps its database
# connection for a minute instead of opening one per operation, which cost
# the sqlite example ~40% of a query's time (connect + close). Health checks
# replace a connection the server dropped before it is used.
for _database in DATABASES.values():
    _database["CONN_MAX_AGE"] = int(os.environ.get("DJANGO_CONN_MAX_AGE", "60"))
    _database["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
GQLWS_EXAMPLE_RATE_LIMIT = float(os.environ.get("GQLWS_EXAMPLE_RATE_LIMIT", "500"))

# Distributed mode by configuration: set GQLWS_REDIS_URL (and run Celery
# workers with `celery -A workers worker -Q gqlws`) to serve the same
# project from several edges.
if os.environ.get("GQLWS_REDIS_URL"):
    GQLWS = {"REDIS_URL": os.environ["GQLWS_REDIS_URL"]}
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", os.environ["GQLWS_REDIS_URL"])
    CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
    if os.environ.get("GQLWS_WORKER_METRICS_PORT"):
        # Workers serve /metrics there (gqlws.ops); edges serve it on their HTTP port.
        GQLWS["WORKER_METRICS_PORT"] = int(os.environ["GQLWS_WORKER_METRICS_PORT"])
