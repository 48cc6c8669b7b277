"""Sending tasks to the workers."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery, signals

from gqlws import runtime


def test_tasks_go_out_without_a_repr_of_their_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery puts ``argsrepr`` in each message's headers for monitoring
    # (events, flower): a request's arguments hold the connection's scope.
    app = Celery("gqlws-test", broker="memory://")
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(runtime, "celery_app", lambda: app)

    def before_publish(headers: dict[str, Any], **_: Any) -> None:
        sent.append(headers)

    signals.before_task_publish.connect(before_publish, weak=False)
    try:
        runtime.send_task("gqlws.execute", ({"scope": b"sessionid=very-secret-cookie"},))
    finally:
        signals.before_task_publish.disconnect(before_publish)
    assert len(sent) == 1
    headers = sent[0]
    assert headers["task"] == "gqlws.execute"
    assert "secret" not in headers["argsrepr"] and "secret" not in headers["kwargsrepr"]
    assert headers["argsrepr"] == "(1 gqlws arguments)"
