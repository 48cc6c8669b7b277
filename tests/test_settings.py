"""The GQLWS setting: defaults, the mode switch, and clear errors for wrong values."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from gqlws.settings import Settings, parse


def test_nothing_configured_is_embedded_mode_with_defaults() -> None:
    settings = parse(None)
    assert settings == Settings()
    assert not settings.distributed


def test_a_redis_url_and_a_celery_broker_switch_on_distributed_mode() -> None:
    settings = parse({"REDIS_URL": "redis://127.0.0.1:1/0"}, celery_broker="redis://x/1")
    assert settings.distributed


def test_distributed_mode_without_a_celery_broker_is_rejected() -> None:
    with pytest.raises(ImproperlyConfigured, match="CELERY_BROKER_URL"):
        parse({"REDIS_URL": "redis://127.0.0.1:1/0"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1], "GQLWS must be a dict, got list"),
        ({"REDIS_URLS": "x"}, "unknown key(s) REDIS_URLS"),
        ({"REDIS_URL": "http://x"}, "GQLWS['REDIS_URL'] must be None or a redis://"),
        ({"HISTORY_LENGTH": 0}, "GQLWS['HISTORY_LENGTH'] must be a positive integer, got 0"),
        ({"HISTORY_LENGTH": True}, "must be a positive integer, got True"),
        ({"GAP_WAIT": "1"}, "GQLWS['GAP_WAIT'] must be a positive number of seconds, got '1'"),
        ({"KEY_PREFIX": "a b"}, "GQLWS['KEY_PREFIX'] must be a non-empty string"),
        ({"METRICS_PATH": "metrics"}, "GQLWS['METRICS_PATH'] must be None or a URL path"),
        ({"WORKER_METRICS_PORT": 70000}, "GQLWS['WORKER_METRICS_PORT'] must be None or a TCP port"),
        ({"LOG_PAYLOADS": "yes"}, "GQLWS['LOG_PAYLOADS'] must be True or False, got 'yes'"),
        ({"TUNE_GC": 0}, "GQLWS['TUNE_GC'] must be True or False, got 0"),
        (
            {"EDGE_HEARTBEAT_INTERVAL": 5, "EDGE_HEARTBEAT_TTL": 5},
            "must be longer than GQLWS['EDGE_HEARTBEAT_INTERVAL']",
        ),
    ],
)
def test_a_wrong_value_is_rejected_with_a_message_naming_it(raw: object, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        parse(raw, celery_broker="redis://x/1")
    assert message in str(error.value)
