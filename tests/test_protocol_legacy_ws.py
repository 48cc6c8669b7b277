"""The legacy graphql-ws session, message by message, without a server."""

from __future__ import annotations

import json

from gqlws.protocol import Authorize, Close, LegacyWsSession, Send, Start, Stop


def frame(**message: object) -> str:
    return json.dumps(message)


START = {"query": "{ hello }", "variables": {}}


def acknowledged() -> LegacyWsSession:
    session = LegacyWsSession()
    assert session.receive(frame(type="connection_init", payload={})) == [Authorize({})]
    assert session.accept_connection() == [Send({"type": "connection_ack"})]
    return session


def test_connection_init_payload_reaches_on_connect_unchanged_even_a_string() -> None:
    assert LegacyWsSession().receive(frame(type="connection_init", payload="")) == [Authorize("")]


def test_reject_sends_connection_error_then_closes() -> None:
    session = LegacyWsSession()
    session.receive(frame(type="connection_init"))
    assert session.reject_connection("go away") == [
        Send({"type": "connection_error", "payload": {"message": "go away"}}),
        Close(4403, "Forbidden"),
    ]


def test_starts_sent_before_the_ack_are_held_then_released_in_order() -> None:
    session = LegacyWsSession()
    session.receive(frame(type="connection_init"))
    assert session.receive(frame(type="start", id="1", payload=START)) == []
    assert session.receive(frame(type="start", id="2", payload=START)) == []
    actions = session.accept_connection()
    assert actions[0] == Send({"type": "connection_ack"})
    assert [a.op_id for a in actions[1:] if isinstance(a, Start)] == ["1", "2"]


def test_a_held_start_that_is_stopped_never_runs() -> None:
    session = LegacyWsSession()
    session.receive(frame(type="connection_init"))
    session.receive(frame(type="start", id="1", payload=START))
    assert session.receive(frame(type="stop", id="1")) == [Send({"id": "1", "type": "complete"})]
    assert session.accept_connection() == [Send({"type": "connection_ack"})]


def test_start_without_connection_init_is_an_error_and_keeps_the_socket() -> None:
    session = LegacyWsSession()
    [error] = session.receive(frame(type="start", id="1", payload=START))
    assert isinstance(error, Send) and error.message["type"] == "error"
    assert error.message["id"] == "1"
    assert "connection_init" in error.message["payload"]["message"]


def test_start_then_data_then_complete() -> None:
    session = acknowledged()
    assert session.receive(frame(type="start", id="1", payload=START)) == [
        Start(
            "1", {"query": "{ hello }", "variables": {}, "operationName": None, "extensions": None}
        )
    ]
    assert session.next("1", {"data": {"hello": "x"}}) == [
        Send({"id": "1", "type": "data", "payload": {"data": {"hello": "x"}}})
    ]
    assert session.complete("1") == [Send({"id": "1", "type": "complete"})]
    assert session.next("1", {"data": None}) == []


def test_stop_ends_the_operation_and_is_answered_with_complete() -> None:
    session = acknowledged()
    session.receive(frame(type="start", id="1", payload=START))
    assert session.receive(frame(type="stop", id="1")) == [
        Stop("1"),
        Send({"id": "1", "type": "complete"}),
    ]
    assert session.receive(frame(type="stop", id="1")) == []


def test_start_with_a_running_id_replaces_the_running_operation() -> None:
    session = acknowledged()
    session.receive(frame(type="start", id="1", payload=START))
    actions = session.receive(frame(type="start", id="1", payload=START))
    assert actions[0] == Stop("1") and isinstance(actions[1], Start)


def test_invalid_document_errors_answer_as_data_with_errors_then_complete() -> None:
    session = acknowledged()
    session.receive(frame(type="start", id="1", payload=START))
    errors = [{"message": "Cannot query field 'x'"}]
    assert session.error("1", errors) == [
        Send({"id": "1", "type": "data", "payload": {"data": None, "errors": errors}}),
        Send({"id": "1", "type": "complete"}),
    ]


def test_keepalive_is_ka_and_only_after_the_ack() -> None:
    session = LegacyWsSession()
    assert session.keepalive() == []
    session.receive(frame(type="connection_init"))
    session.accept_connection()
    assert session.keepalive() == [Send({"type": "ka"})]


def test_connection_terminate_closes_normally() -> None:
    session = acknowledged()
    session.receive(frame(type="start", id="1", payload=START))
    assert session.receive(frame(type="connection_terminate")) == [
        Stop("1"),
        Close(1000, "Connection terminated by the client"),
    ]


def test_bad_messages_get_an_error_message_and_the_socket_stays_open() -> None:
    session = acknowledged()
    cases = [
        ("not json", None, "JSON-parseable"),
        (frame(id="1"), None, "'type'"),
        (frame(type="bogus", id="7"), "7", "Invalid message type: 'bogus'"),
        (frame(type="start", payload=START), None, "'id'"),
        (frame(type="start", id="2", payload={"query": 1}), "2", "'query'"),
        (frame(type="stop"), None, "'id'"),
        (frame(type="start", id=5, payload=START), None, "'id' must be a string"),
        (frame(type="connection_init"), None, "Too many initialisation requests"),
    ]
    for raw, op_id, text in cases:
        [error] = session.receive(raw)
        assert isinstance(error, Send), raw
        assert error.message["type"] == "error"
        assert error.message.get("id") == op_id
        assert text in error.message["payload"]["message"], raw
    assert session.receive(frame(type="start", id="9", payload=START))[0] == Start(
        "9", {"query": "{ hello }", "variables": {}, "operationName": None, "extensions": None}
    )
