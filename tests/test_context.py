"""info.context: dict and attribute access over the scope, and deltas for workers."""

from __future__ import annotations

from typing import Any

import pytest

from gqlws.context import OperationContext, ScopeAsContext, TrackingDict, apply_delta
from gqlws.remote import serialized_snapshot, snapshot_scope
from gqlws.serializer import deserialize, serialize


def test_attribute_and_item_access_are_the_same_storage() -> None:
    scope: dict[str, object] = {"type": "websocket"}
    context = ScopeAsContext(scope)
    context.fortytwo = 42
    assert context["fortytwo"] == 42
    assert scope["fortytwo"] == 42
    context["x"] = 1
    assert context.x == 1
    del context.x
    assert "x" not in context and "x" not in scope
    assert context.channels_scope is scope
    assert context._asdict() is scope


def test_missing_attributes_raise_attribute_error_naming_them() -> None:
    context = ScopeAsContext({})
    with pytest.raises(AttributeError, match="nothing"):
        _ = context.nothing
    assert getattr(context, "nothing", "default") == "default"


def test_private_names_are_not_routed_to_the_scope() -> None:
    context = ScopeAsContext({})
    with pytest.raises(AttributeError):
        context._secret = 1
    with pytest.raises(AttributeError):
        _ = context._secret


def test_operation_context_carries_operation_id_and_name() -> None:
    context = OperationContext({"user": "u"}, "op1", "Named")
    assert context.graphql_operation_id == "op1"
    assert context.graphql_operation_name == "Named"
    assert context.user == "u"


def test_tracking_dict_reports_what_resolvers_changed_and_apply_delta_merges_it() -> None:
    live = {"keep": 1, "gone": 2, "changed": 3}
    snapshot = TrackingDict(live)
    context = ScopeAsContext(snapshot)
    context.changed = 30
    context.added = 4
    del context.gone
    context.temp = 5
    snapshot.pop("temp")
    assert snapshot.delta() == ({"changed": 30, "added": 4}, ["gone", "temp"])
    apply_delta(live, snapshot.delta())
    assert live == {"keep": 1, "changed": 30, "added": 4}


class _User:
    is_authenticated = True
    pk = 42


class _Session:
    session_key = "k" * 32


def _scope(**extra: Any) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/graphql/",
        "headers": [(b"host", b"example.com"), (b"cookie", b"sessionid=k")],
        "client": ["127.0.0.1", 5555],
        "url_route": {"args": (), "kwargs": {"room": "kittens"}},
        "user": _User(),
        "session": _Session(),
        **extra,
    }


@pytest.mark.parametrize("extra", [{}, {"channel_layer": object(), "state": {"lock": object()}}])
def test_the_serialized_snapshot_is_the_snapshot_serialized(extra: dict[str, Any]) -> None:
    """Whole when the scope serializes; key by key, leaving out what does not, otherwise."""
    scope = _scope(**extra)
    snapshot = snapshot_scope(scope)
    assert deserialize(serialized_snapshot(scope)) == deserialize(serialize(snapshot))
    assert serialized_snapshot(scope) == serialize(snapshot)
    assert snapshot["__user_id"] == 42 and snapshot["__session_key"] == "k" * 32
    assert "user" not in snapshot and "session" not in snapshot
    assert "channel_layer" not in snapshot and "state" not in snapshot
