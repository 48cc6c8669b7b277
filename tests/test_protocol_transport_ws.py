"""The graphql-transport-ws session, message by message, without a server."""

from __future__ import annotations

import collections
import datetime
import enum
import json

import pytest

from gqlws.protocol import (
    Authorize,
    Close,
    CloseCode,
    ConnectionState,
    Send,
    Start,
    Stop,
    TransportWsSession,
    negotiate,
)
from gqlws.protocol.base import encode


def frame(**message: object) -> str:
    return json.dumps(message)


def acknowledged() -> TransportWsSession:
    session = TransportWsSession()
    assert session.receive(frame(type="connection_init")) == [Authorize({})]
    assert session.accept_connection() == [Send({"type": "connection_ack"})]
    return session


SUBSCRIBE = {"query": "{ hello }"}


def test_negotiation_prefers_graphql_transport_ws_whenever_offered() -> None:
    assert negotiate(["graphql-ws", "graphql-transport-ws"]).subprotocol == "graphql-transport-ws"
    assert negotiate(["graphql-ws"]).subprotocol == "graphql-ws"
    assert negotiate(["mqtt"]) is None
    assert negotiate([]) is None


def test_connection_init_asks_for_authorisation_with_its_payload() -> None:
    session = TransportWsSession()
    assert session.receive(frame(type="connection_init", payload={"token": "t"})) == [
        Authorize({"token": "t"})
    ]
    assert session.state is ConnectionState.AUTHORIZING


def test_accept_sends_connection_ack_with_optional_payload() -> None:
    session = TransportWsSession()
    session.receive(frame(type="connection_init"))
    assert session.accept_connection({"x": 1}) == [
        Send({"type": "connection_ack", "payload": {"x": 1}})
    ]


def test_reject_closes_with_4403_forbidden() -> None:
    session = TransportWsSession()
    session.receive(frame(type="connection_init"))
    assert session.reject_connection("nope") == [Close(CloseCode.FORBIDDEN, "Forbidden")]


def test_second_connection_init_closes_with_4429_even_before_the_ack() -> None:
    session = TransportWsSession()
    session.receive(frame(type="connection_init"))
    assert session.receive(frame(type="connection_init")) == [
        Close(4429, "Too many initialisation requests")
    ]


def test_init_timeout_closes_with_4408_only_before_connection_init() -> None:
    assert TransportWsSession().init_timeout() == [Close(4408, "Connection initialisation timeout")]
    assert acknowledged().init_timeout() == []


def test_subscribe_before_ack_closes_with_4401_unauthorized() -> None:
    session = TransportWsSession()
    assert session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE)) == [
        Close(4401, "Unauthorized")
    ]
    session = TransportWsSession()
    session.receive(frame(type="connection_init"))  # on_connect still running
    assert session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE)) == [
        Close(4401, "Unauthorized")
    ]


def test_subscribe_starts_the_operation() -> None:
    session = acknowledged()
    [start] = session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    assert isinstance(start, Start) and start.op_id == "1"
    assert start.payload["query"] == "{ hello }"


def test_duplicate_id_closes_with_4409_even_while_the_first_is_still_running() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    actions = session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    assert actions == [Stop("1"), Close(4409, "Subscriber for 1 already exists")]


def test_id_can_be_reused_once_the_operation_completed() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    assert session.complete("1") == [Send({"id": "1", "type": "complete"})]
    assert isinstance(session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))[0], Start)


def test_next_then_complete_and_nothing_after_complete() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    assert session.next("1", {"data": {"a": 1}}) == [
        Send({"id": "1", "type": "next", "payload": {"data": {"a": 1}}})
    ]
    assert session.complete("1") == [Send({"id": "1", "type": "complete"})]
    assert session.next("1", {"data": {"a": 2}}) == []
    assert session.complete("1") == []


def test_error_carries_a_list_of_errors_and_ends_the_operation() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    errors = [{"message": "bad"}]
    assert session.error("1", errors) == [Send({"id": "1", "type": "error", "payload": errors})]
    assert session.complete("1") == []


def test_client_complete_stops_the_operation_and_drops_later_results() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    assert session.receive(frame(type="complete", id="1")) == [Stop("1")]
    assert session.next("1", {"data": None}) == []


def test_client_complete_for_an_unknown_id_is_ignored() -> None:
    assert acknowledged().receive(frame(type="complete", id="nope")) == []


def test_ping_is_answered_with_pong_at_any_time_and_pong_is_ignored() -> None:
    session = TransportWsSession()
    assert session.receive(frame(type="ping")) == [Send({"type": "pong"})]
    assert session.receive(frame(type="ping", payload={"x": 1})) == [Send({"type": "pong"})]
    assert session.receive(frame(type="pong")) == []


def test_keepalive_is_a_ping() -> None:
    assert acknowledged().keepalive() == [Send({"type": "ping"})]


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("not json", "JSON-parseable"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"id": "1"}), "'type'"),
        (json.dumps({"type": "unknown"}), "Unexpected message of type 'unknown'"),
        (json.dumps({"type": "next", "id": "1", "payload": {}}), "'next'"),
        (json.dumps({"type": "connection_init", "payload": "str"}), "'payload'"),
        (json.dumps({"type": "subscribe", "payload": SUBSCRIBE}), "'id'"),
        (json.dumps({"type": "subscribe", "id": 7, "payload": SUBSCRIBE}), "'id'"),
        (json.dumps({"type": "subscribe", "id": "1", "payload": {"query": 42}}), "'query'"),
        (
            json.dumps(
                {"type": "subscribe", "id": "1", "payload": {"query": "{a}", "variables": 1}}
            ),
            "'variables'",
        ),
        (json.dumps({"type": "complete"}), "'id'"),
        (json.dumps({"type": "ping", "payload": [1]}), "'payload'"),
    ],
)
def test_invalid_messages_close_with_4400_and_a_reason(raw: str, reason_part: str) -> None:
    session = acknowledged()
    [close] = session.receive(raw)
    assert isinstance(close, Close) and close.code == CloseCode.BAD_REQUEST
    assert reason_part in close.reason
    assert session.state is ConnectionState.CLOSED
    assert session.receive(frame(type="ping")) == []


def test_binary_frames_are_decoded_as_utf8_json() -> None:
    session = TransportWsSession()
    assert session.receive(data=b'{"type": "ping"}') == [Send({"type": "pong"})]
    [close] = session.receive(data=b"\xff\xfe")
    assert isinstance(close, Close) and close.code == 4400


def test_closing_stops_every_running_operation() -> None:
    session = acknowledged()
    session.receive(frame(type="subscribe", id="1", payload=SUBSCRIBE))
    session.receive(frame(type="subscribe", id="2", payload=SUBSCRIBE))
    assert session.close(1012, "Service restart") == [
        Stop("1"),
        Stop("2"),
        Close(1012, "Service restart"),
    ]


def test_frames_are_compact_json_with_text_as_utf8() -> None:
    data = {"text": "héllo ✓ 日本", "n": [1, 2.5]}
    message = {"type": "next", "id": "1", "payload": {"data": data}}
    text = encode(message)
    assert text == '{"type":"next","id":"1","payload":{"data":{"text":"héllo ✓ 日本","n":[1,2.5]}}}'
    assert json.loads(text) == message


@pytest.mark.parametrize(
    "value",
    [
        {1: "int key", None: "null key"},  # keys json turns into strings
        {"big": 2**70, "small": -(2**65)},  # integers beyond 64 bits, kept exact
        {"lone surrogate": "\ud800"},
        {"ordered": collections.OrderedDict(b=1, a=2), "flag": enum.IntEnum("F", "X").X},
    ],
)
def test_what_the_fast_encoder_declines_is_encoded_as_json_encodes_it(value: object) -> None:
    assert encode(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize("value", [{1, 2}, datetime.datetime(2026, 1, 1), object()])
def test_values_json_cannot_encode_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        encode({"payload": value})
