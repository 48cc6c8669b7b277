"""Celery glue of gqlws (distributed mode): the app and its tasks. See DESIGN.md."""

from __future__ import annotations

__all__: list[str] = []
