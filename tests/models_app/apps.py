"""The test models app; listed in ``tests.settings.INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "tests.models_app"
    label = "models_app"
    default_auto_field = "django.db.models.AutoField"
