"""Sending tasks to the workers; the garbage collector of a serving process."""

from __future__ import annotations

import json
import subprocess
import sys
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


_EDGE_GC = """
import asyncio, gc, json, django
django.setup()
from django.conf import settings
settings.GQLWS = json.loads({gqlws!r})
from gqlws import runtime
from gqlws.edge import Edge
runtime.reset()  # read at start-up, before the override
default = gc.get_threshold()

async def serve():
    Edge.current()
    Edge.current()  # the second edge of a loop: tuned once

asyncio.run(serve())
print(json.dumps([default, gc.get_threshold(), gc.get_freeze_count()]))
"""


@pytest.mark.parametrize("tune", [True, False])
def test_the_first_edge_of_a_process_tunes_its_garbage_collector(tune: bool) -> None:
    # In a process of its own: the collector is process-wide.
    from tests.processes import ROOT, child_env

    done = subprocess.run(
        [sys.executable, "-c", _EDGE_GC.format(gqlws=json.dumps({"TUNE_GC": tune}))],
        cwd=ROOT,
        env=child_env(DJANGO_SETTINGS_MODULE="tests.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    default, threshold, frozen = json.loads(done.stdout)
    if tune:
        assert tuple(threshold) == runtime.GC_THRESHOLDS != tuple(default)
        # What the process held once it served: Django, the schema, the modules.
        assert frozen > 10_000
    else:
        assert threshold == default
        assert frozen == 0


def test_a_worker_tunes_its_collector_in_each_pool_process() -> None:
    from celery.signals import worker_process_init, worker_ready

    import workers.app  # noqa: F401  (connects the signals)

    for signal in (worker_ready, worker_process_init):
        # Connected with weak=False: the receivers themselves, not weak references.
        assert runtime.tune_gc_signal in [receiver for _, receiver in signal.receivers]
