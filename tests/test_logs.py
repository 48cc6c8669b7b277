"""Structured logs (``gqlws.logs``): one record per connection event, ids, no payloads.

In-process (Channels' communicator, embedded mode): what matters here is
what the records carry, not the transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from gqlws import GraphqlWsResponseError, logs, runtime
from gqlws.client import GraphqlWsConnectionRejected
from gqlws.edge import Edge
from gqlws.testing import GraphqlWsClient, GraphqlWsTransport
from tests.asgi import application

SECRET = "hunter2-s3cret"


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures gqlws's records from INFO up (production's level for these events)."""
    caplog.set_level(logging.INFO, logger="gqlws")
    return caplog


@pytest.fixture
def log_payloads() -> Iterator[None]:
    saved = getattr(django_settings, "GQLWS", None)
    django_settings.GQLWS = {**(saved or {}), "LOG_PAYLOADS": True}
    runtime.reset()
    yield
    if saved is None:
        del django_settings.GQLWS
    else:
        django_settings.GQLWS = saved
    runtime.reset()


def events(records: list[logging.LogRecord], name: str) -> list[logging.LogRecord]:
    return [record for record in records if getattr(record, "event", None) == name]


def as_json(records: list[logging.LogRecord]) -> str:
    """Every record as the JSON formatter prints it (all their fields, tracebacks included)."""
    formatter = logs.JsonFormatter()
    return "\n".join(formatter.format(record) for record in records)


async def connect(path: str = "graphql/", payload: Any = None) -> GraphqlWsClient:
    client = GraphqlWsClient(GraphqlWsTransport(application, path))
    await client.connect_and_init(payload=payload)
    return client


async def test_a_connection_logs_connected_then_closed_with_its_connection_and_edge_ids(
    logged: pytest.LogCaptureFixture,
) -> None:
    client = await connect()
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
    await client.finalize()
    (connected,) = events(logged.records, "connected")
    (closed,) = events(logged.records, "closed")
    edge = Edge.of_loop(asyncio.get_running_loop())
    assert edge is not None
    for record in (connected, closed):
        assert record.connection_id == connected.connection_id
        assert record.edge_id == edge.edge_id
        assert record.levelno == logging.INFO
    assert len(connected.connection_id) == 12
    assert connected.subprotocol == "graphql-transport-ws"
    assert (closed.code, closed.initiator) == (1000, "client")
    assert closed.duration >= 0


async def test_two_connections_get_different_ids(logged: pytest.LogCaptureFixture) -> None:
    first, second = await connect(), await connect()
    await first.finalize()
    await second.finalize()
    ids = {record.connection_id for record in events(logged.records, "connected")}
    assert len(ids) == 2


async def test_a_connection_rejected_by_on_connect_is_logged_with_its_code_and_not_the_payload(
    logged: pytest.LogCaptureFixture,
) -> None:
    client = GraphqlWsClient(GraphqlWsTransport(application, "graphql/"))
    with pytest.raises(GraphqlWsConnectionRejected):
        await client.connect_and_init(payload={"reject": True, "token": SECRET})
    await client.finalize()  # the disconnect, which logs "closed"
    (rejected,) = events(logged.records, "rejected")
    assert rejected.code == 4403
    assert rejected.error_type == "PermissionError"
    (closed,) = events(logged.records, "closed")
    assert (closed.code, closed.initiator) == (4403, "server")
    text = as_json(logged.records)
    assert SECRET not in text
    assert "Rejected on request" not in text  # on_connect's message may quote a token


async def test_a_connection_offering_no_known_subprotocol_is_logged_as_rejected_with_4406(
    logged: pytest.LogCaptureFixture,
) -> None:
    communicator = WebsocketCommunicator(application, "graphql/", subprotocols=["nope"])
    connected, _ = await communicator.connect()
    assert connected
    while (await communicator.receive_output(5))["type"] != "websocket.close":
        pass
    await communicator.disconnect()
    (rejected,) = events(logged.records, "rejected")
    assert rejected.code == 4406 and rejected.offered == ["nope"]


async def test_a_failed_operation_is_logged_with_its_operation_id_and_no_query_or_variables(
    logged: pytest.LogCaptureFixture,
) -> None:
    client = await connect()
    query = "query Leaky($who: String) { fail hello(name: $who) }"
    op_id = await client.start(query, variables={"who": SECRET})
    with pytest.raises(GraphqlWsResponseError):
        await client.receive(wait_id=op_id, assert_type="next")
    invalid = await client.start('{ noSuchField(arg: "' + SECRET + '") }')
    with pytest.raises(GraphqlWsResponseError):
        await client.receive(wait_id=invalid, assert_type="error")
    await client.finalize()

    failed = {record.operation_id: record for record in events(logged.records, "operation_failed")}
    assert set(failed) == {op_id, invalid}
    record = failed[op_id]
    assert record.levelno == logging.WARNING
    assert (record.reason, record.errors) == ("errors", 1)
    assert record.operation_name == "Leaky"
    assert record.connection_id and record.edge_id
    assert (failed[invalid].reason, failed[invalid].levelno) == ("invalid", logging.INFO)
    text = as_json(logged.records)
    for leak in (SECRET, "hello(name", "noSuchField", "Resolver failed on purpose"):
        assert leak not in text


async def test_an_internal_error_is_logged_at_error_with_its_traceback(
    logged: pytest.LogCaptureFixture,
) -> None:
    client = await connect("graphql-broken/")
    op_id = await client.start("{ hello }", variables={"x": SECRET})
    with pytest.raises(GraphqlWsResponseError):
        await client.receive(wait_id=op_id, assert_type="error")
    await client.finalize()
    (record,) = events(logged.records, "operation_failed")
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert (record.operation_id, record.reason) == (op_id, "internal")
    assert SECRET not in as_json(logged.records)


async def test_with_log_payloads_on_error_messages_and_rejection_details_are_logged(
    logged: pytest.LogCaptureFixture, log_payloads: None
) -> None:
    client = await connect()
    op_id = await client.start("{ fail }")
    with pytest.raises(GraphqlWsResponseError):
        await client.receive(wait_id=op_id, assert_type="next")
    await client.finalize()
    (record,) = events(logged.records, "operation_failed")
    assert record.messages == ["Resolver failed on purpose"]


def test_the_json_formatter_prints_one_parsable_object_with_the_extra_fields() -> None:
    logger = logging.getLogger("gqlws.test-json")
    log = logs.ConnectionLogger(logger, "c0ffee123456")
    log.bind(edge_id="edge-1")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log.event("closed", "Connection closed (%s)", 1000, code=1000, odd=object())
        try:
            raise ValueError("boom")
        except ValueError:
            log.operation_failed("op-7", "internal", [{"message": "x"}], exc_info=True)
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(logs.JsonFormatter().format(record)) for record in captured)
    assert first["message"] == "Connection closed (1000)"
    assert first["level"] == "INFO" and first["logger"] == "gqlws.test-json"
    assert first["time"].endswith("Z")
    assert (first["event"], first["connection_id"], first["edge_id"], first["code"]) == (
        "closed",
        "c0ffee123456",
        "edge-1",
        1000,
    )
    assert first["odd"].startswith("<object object")  # what JSON cannot hold: its repr
    assert "operation_id" not in first
    assert (second["event"], second["operation_id"], second["errors"]) == (
        "operation_failed",
        "op-7",
        1,
    )
    assert "ValueError: boom" in second["exc_info"]
    assert "messages" not in second  # LOG_PAYLOADS is off
