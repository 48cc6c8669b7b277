"""Django app config: with ``"gqlws"`` in INSTALLED_APPS, a wrong GQLWS fails at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class GqlwsConfig(AppConfig):
    name = "gqlws"
    verbose_name = "gqlws"

    def ready(self) -> None:
        from .settings import get_settings

        get_settings()  # raises ImproperlyConfigured naming the wrong key
