"""Liveness and readiness probes (``gqlws.health``): Redis outages and drains, over HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.test import Client

from gqlws import drain
from tests.conftest import distributed_runtime
from tests.processes import ServerProcess
from tests.redis_server import redis_server


def probe(path: str) -> tuple[int, dict[str, Any]]:
    response = Client().get(path)
    assert response["Content-Type"].startswith("application/json")
    return response.status_code, json.loads(response.content)


def probe_until(path: str, status: int, timeout: float = 10.0) -> dict[str, Any]:
    """Probe until it answers ``status``; its body then."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = probe(path)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"{path} still answers {got}: {body}"
        time.sleep(0.05)


def test_liveness_answers_200_while_the_process_serves() -> None:
    assert probe("/healthz") == (200, {"status": "ok"})


def test_readiness_answers_200_in_embedded_mode() -> None:
    assert probe("/readyz") == (200, {"status": "ok"})


def test_readiness_answers_503_naming_the_drain_while_the_edge_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drain, "draining", lambda: True)
    assert probe("/readyz") == (503, {"status": "unavailable", "reasons": ["draining"]})
    assert probe("/healthz")[0] == 200  # draining is not dead: no restart


def test_readiness_answers_503_while_redis_is_down_and_200_once_it_is_back() -> None:
    with redis_server() as server, distributed_runtime(server.url):
        assert probe("/readyz") == (200, {"status": "ok"})
        server.stop()
        status, body = probe("/readyz")
        assert status == 503
        [reason] = body["reasons"]
        assert reason.startswith("redis: ")
        assert probe("/healthz")[0] == 200
        server.start()
        # A pooled connection may still be the dead one: the next probe reconnects.
        assert probe_until("/readyz", 200) == {"status": "ok"}


def test_an_edge_under_daphne_answers_both_probes(daphne_server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{daphne_server.port}"
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/readyz/nothing", timeout=10)
    assert missing.value.code == 404
