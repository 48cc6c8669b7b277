"""Settings of the example project: embedded mode, sqlite, no Redis, no Celery."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "gqlws-example-not-secret"  # an example: never deploy this key
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
USE_TZ = True
INSTALLED_APPS = [
    "daphne",  # makes `runserver` serve the ASGI application, WebSockets included
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "example.urls"
ASGI_APPLICATION = "example.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Distributed mode by configuration: set GQLWS_REDIS_URL (and run Celery
# workers with `celery -A workers worker -Q gqlws`) to serve the same
# project from several edges.
if os.environ.get("GQLWS_REDIS_URL"):
    GQLWS = {"REDIS_URL": os.environ["GQLWS_REDIS_URL"]}
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", os.environ["GQLWS_REDIS_URL"])
    CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
