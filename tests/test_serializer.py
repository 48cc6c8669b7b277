"""Broadcast payloads through serialize/deserialize: every supported type, models, errors."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.db.models import Model

from gqlws import serializer
from gqlws.serializer import SerializationError, deserialize, serialize

UTC = datetime.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def round_trip(payload: Any) -> Any:
    return deserialize(serialize(payload))


def field_values(instance: Model) -> dict[str, Any]:
    return {f.attname: f.value_from_object(instance) for f in instance._meta.concrete_fields}


class NotSerializable:
    pass


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


Point = collections.namedtuple("Point", "x y")


@pytest.fixture
def no_queries() -> Iterator[None]:
    """Any database query fails the test."""

    def refuse(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        raise AssertionError(f"unexpected database query: {sql}")

    with connection.execute_wrapper(refuse):
        yield


@pytest.fixture(scope="module")
def database() -> Iterator[None]:
    """A migrated test database (in memory for sqlite), for the tests that really query."""
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(config, verbosity=0)


@pytest.fixture
def models_app() -> Any:
    """``tests.models_app.models``, once the app is in ``tests.settings.INSTALLED_APPS``."""
    if not apps.is_installed("tests.models_app"):
        pytest.skip("tests.models_app is not in INSTALLED_APPS")
    from tests.models_app import models

    return models


# Values and types.


def test_json_like_payloads_round_trip_unchanged() -> None:
    payload = {
        "text": "naïve ☃",
        "number": -3,
        "ratio": 1.5,
        "flags": [True, False, None],
        "nested": {"a": [{"b": []}, {}]},
    }
    assert round_trip(payload) == payload


def test_json_like_payloads_are_packed_by_msgpack_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_python_hook(value: Any) -> Any:
        raise AssertionError(f"the Python hook saw {value!r}")

    monkeypatch.setattr(serializer, "_default", no_python_hook)
    payload = {"items": [{"id": 1, "name": "x", "score": 0.5, "tags": ["a"]}], "next": None}
    assert round_trip(payload) == payload


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.1,
        float("inf"),
        "",
        "naïve ☃",
        b"\x00\xff",
        [],
        {},
        (),
        (1, "a"),
        set(),
        {1, "a", (2, 3)},
        frozenset(),
        frozenset({1, 2}),
        datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
        datetime.datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
        datetime.date(1999, 12, 31),
        datetime.time(23, 59, 59, 1),
        datetime.time(8, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.timedelta(days=-1, seconds=5, microseconds=7),
        decimal.Decimal("3.14"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
    ],
    ids=repr,
)
def test_each_supported_value_round_trips_as_an_equal_value_of_the_same_type(value: Any) -> None:
    restored = round_trip(value)
    assert restored == value
    assert type(restored) is type(value)


def test_integers_beyond_64_bits_round_trip() -> None:
    values = [2**64, -(2**63) - 1, -(2**64), 2**71 - 1, -(2**71), 10**100, -(10**100), 2**4000]
    assert round_trip(values) == values
    assert round_trip({2**70: "a key"}) == {2**70: "a key"}


def test_tuples_stay_tuples_and_lists_stay_lists_at_any_depth() -> None:
    payload = [(1, [2, (3, ())]), {"t": ([],)}]
    restored = round_trip(payload)
    assert restored == payload
    assert type(restored[0]) is tuple
    assert type(restored[0][1]) is list
    assert type(restored[0][1][1]) is tuple
    assert type(restored[1]["t"]) is tuple
    assert type(restored[1]["t"][0]) is list


def test_dict_keys_of_any_supported_hashable_type_are_preserved_in_order() -> None:
    payload = {
        "str": 0,
        1: "int",
        2.5: "float",
        None: "none",
        b"k": "bytes",
        (1, "x"): "tuple",
        frozenset({1}): "frozenset",
        datetime.date(2020, 1, 1): "date",
        uuid.UUID(int=1): "uuid",
        decimal.Decimal("1.25"): "decimal",
        2**80: "big int",
    }
    restored = round_trip(payload)
    assert list(restored.items()) == list(payload.items())
    assert [type(key) for key in restored] == [type(key) for key in payload]


def test_naive_datetimes_stay_naive_and_aware_ones_keep_their_utc_offset() -> None:
    naive = datetime.datetime(2024, 5, 1, 10, 0, 0, 123456)
    offset = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))
    aware = datetime.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=offset)
    restored_naive, restored_aware = round_trip([naive, aware])
    assert restored_naive == naive and restored_naive.tzinfo is None
    assert restored_aware == aware
    assert restored_aware.utcoffset() == aware.utcoffset()
    assert restored_aware.replace(tzinfo=None) == aware.replace(tzinfo=None)


@pytest.mark.parametrize("fold", [0, 1])
def test_zoneinfo_datetimes_come_back_in_their_zone_with_their_fold(fold: int) -> None:
    # 02:30 happens twice in Paris on that night: fold picks the summer or the winter one.
    value = datetime.datetime(2021, 10, 31, 2, 30, fold=fold, tzinfo=PARIS)
    restored = round_trip(value)
    assert restored.tzinfo is PARIS
    assert restored.fold == fold
    assert restored.utcoffset() == value.utcoffset()
    assert restored.replace(tzinfo=None) == value.replace(tzinfo=None)


def test_a_zone_the_receiver_does_not_know_falls_back_to_the_utc_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = datetime.datetime(2024, 7, 1, 12, 0, tzinfo=PARIS)
    data = serialize(value)

    def unknown_zone(key: str) -> zoneinfo.ZoneInfo:
        raise zoneinfo.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(serializer.zoneinfo, "ZoneInfo", unknown_zone)
    restored = deserialize(data)
    assert restored == value
    assert restored.utcoffset() == datetime.timedelta(hours=2)


def test_decimals_round_trip_exactly() -> None:
    texts = ["0.1", "1.000", "1E+30", "-0", "NaN", "-Infinity", "3.14159265358979323846264338327"]
    restored = round_trip([decimal.Decimal(text) for text in texts])
    assert [str(value) for value in restored] == texts
    assert all(type(value) is decimal.Decimal for value in restored)


def test_subclasses_of_supported_types_come_back_as_their_base_type() -> None:
    class Big(int):
        pass

    payload = [
        Color.RED,
        Level.HIGH,
        Big(2**70),
        Point(1, 2),
        collections.OrderedDict(a=1),
        collections.defaultdict(list, b=[2]),
    ]
    restored = round_trip(payload)
    assert restored == ["red", 3, 2**70, (1, 2), {"a": 1}, {"b": [2]}]
    assert [type(value) for value in restored] == [str, int, int, tuple, dict, dict]


# Django model instances.


def test_a_model_instance_comes_back_as_its_class_with_its_pk_and_field_values(
    no_queries: None,
) -> None:
    # User has many-to-many relations too (groups, permissions): dropped, without a query.
    user = User(
        pk=7,
        username="ann",
        email="ann@example.com",
        is_staff=True,
        date_joined=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_login=None,
    )
    restored = round_trip(user)
    assert type(restored) is User
    assert restored == user and restored.pk == 7
    assert field_values(restored) == field_values(user)
    assert restored._state.adding is True and restored._state.db is None


def test_a_foreign_key_comes_back_as_its_id_value(no_queries: None) -> None:
    permission = Permission(pk=3, name="Can x", codename="x", content_type_id=12)
    restored = round_trip(permission)
    assert restored.content_type_id == 12
    assert field_values(restored) == field_values(permission)
    assert "content_type" not in restored._state.fields_cache


def test_model_instances_nested_in_dicts_lists_and_tuples_round_trip(no_queries: None) -> None:
    group = Group(pk=1, name="admins")
    ann, bob = User(pk=1, username="ann"), User(pk=2, username="bob")
    payload = {"group": group, "members": [ann, bob], "pair": (group, ann), "by_model": {bob: 2}}
    restored = round_trip(payload)
    assert restored == payload
    assert type(restored["pair"]) is tuple
    assert [member.username for member in restored["members"]] == ["ann", "bob"]
    assert type(next(iter(restored["by_model"]))) is User


def test_a_model_loaded_from_the_database_comes_back_loaded_with_its_deferred_fields_deferred(
    no_queries: None,
) -> None:
    # What User.objects.only("username").get(pk=5) returns; serializing must not load the rest.
    user = User.from_db("default", ["id", "username"], [5, "bob"])
    restored = round_trip(user)
    assert restored == user and restored.username == "bob"
    assert restored.get_deferred_fields() == user.get_deferred_fields() != set()
    assert restored._state.db == "default" and restored._state.adding is False


def test_a_queryset_is_serialized_as_the_list_of_its_instances(database: None) -> None:
    Group.objects.bulk_create([Group(name="a"), Group(name="b")])
    restored = round_trip({"groups": Group.objects.order_by("name")})
    assert type(restored["groups"]) is list
    assert restored["groups"] == list(Group.objects.order_by("name"))
    assert [group.name for group in restored["groups"]] == ["a", "b"]


def test_a_model_from_a_release_with_other_fields_restores_the_fields_this_release_has() -> None:
    fields = {"id": 9, "username": "eve", "field_of_a_newer_release": 1}
    data = msgpack.packb(["auth.User", "default", False, fields, []])
    restored = deserialize(msgpack.packb(msgpack.ExtType(serializer._Ext.MODEL, data)))
    assert restored.pk == 9 and restored.username == "eve"
    assert "email" in restored.get_deferred_fields()


def test_a_multi_table_inheritance_child_keeps_its_parents_fields(
    models_app: Any, no_queries: None
) -> None:
    restaurant = models_app.Restaurant(
        pk=4, name="Luigi's", address="Via Roma 1", serves_pizza=True, owner_id=2
    )
    restored = round_trip(restaurant)
    assert type(restored) is models_app.Restaurant and restored == restaurant
    assert field_values(restored) == field_values(restaurant)
    assert (restored.name, restored.address, restored.owner_id) == ("Luigi's", "Via Roma 1", 2)


def test_a_proxy_model_instance_comes_back_as_the_proxy_class(
    models_app: Any, no_queries: None
) -> None:
    pizzeria = models_app.Pizzeria(pk=5, name="Da Mario", serves_pizza=True)
    restored = round_trip([pizzeria])[0]
    assert type(restored) is models_app.Pizzeria and restored == pizzeria
    assert field_values(restored) == field_values(pizzeria)


def test_field_values_of_every_kind_round_trip(models_app: Any, no_queries: None) -> None:
    specimen = models_app.Specimen(
        id=uuid.UUID(int=42),
        price=decimal.Decimal("9.90"),
        duration=datetime.timedelta(hours=1, microseconds=1),
        day=datetime.date(2024, 2, 29),
        at=datetime.time(12, 30),
        when=datetime.datetime(2024, 2, 29, 12, 30, tzinfo=PARIS),
        data={"list": [1, 2.5, None], "nested": {"ok": True}},
        blob=b"\x00\x01",
        attachment="menus/spring.pdf",  # a FieldFile: crosses as text, back through to_python
        ratio=None,
    )
    restored = round_trip(specimen)
    assert restored == specimen
    assert field_values(restored) == field_values(specimen)
    assert restored.attachment.name == "menus/spring.pdf"
    assert restored.when.tzinfo is PARIS


# Errors.


def test_an_unserializable_value_deep_inside_is_named_with_its_type_and_path() -> None:
    payload = {"items": [1, 2, {"x": object()}]}
    with pytest.raises(SerializationError) as error:
        serialize(payload)
    assert str(error.value).startswith(
        "Cannot serialize value of type 'object' at payload['items'][2]['x']: "
        "not a supported type (None, bool, int"
    )


def test_serialization_error_is_both_a_type_error_and_a_value_error() -> None:
    with pytest.raises(TypeError):
        serialize([NotSerializable()])
    with pytest.raises(ValueError):
        serialize([NotSerializable()])
    with pytest.raises(ValueError):
        deserialize(b"\xc1")


def test_an_unserializable_value_inside_tuples_and_sets_is_found_too() -> None:
    with pytest.raises(SerializationError, match=r"at payload\['t'\]\[1\]\[1\]\[0\]: "):
        serialize({"t": (1, (2, frozenset({NotSerializable()})))})


def test_a_user_class_is_named_with_its_module() -> None:
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize value of type 'tests.test_serializer.NotSerializable' at "
        r"payload\[0\]:",
    ):
        serialize([NotSerializable()])


def test_an_unsupported_dict_key_is_reported_at_its_dicts_path() -> None:
    with pytest.raises(
        SerializationError, match=r"^Cannot serialize dict key of type 'object' at payload\['a'\]:"
    ):
        serialize({"a": {object(): 1}})


def test_an_unserializable_json_field_value_is_reported_at_the_model_fields_path(
    models_app: Any, no_queries: None
) -> None:
    specimen = models_app.Specimen(data={"k": [object()]})
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize value of type 'object' at payload\['s'\]\.data\['k'\]\[0\]:",
    ):
        serialize({"s": specimen})


@pytest.mark.parametrize(
    ("make_cycle", "message"),
    [
        (
            lambda: [1, 2],
            r"^Cannot serialize value of type 'list' at payload\[2\]: "
            r"reference cycle, it is the same object as payload$",
        ),
        (
            lambda: {"x": [1]},
            r"^Cannot serialize value of type 'dict' at payload\['x'\]\[1\]: reference cycle",
        ),
    ],
    ids=["list", "dict"],
)
def test_a_reference_cycle_raises_serialization_error_naming_where_it_closes(
    make_cycle: Callable[[], Any], message: str
) -> None:
    payload = make_cycle()
    (payload if isinstance(payload, list) else payload["x"]).append(payload)
    with pytest.raises(SerializationError, match=message):
        serialize(payload)


def test_a_reference_cycle_through_a_tuple_raises_serialization_error() -> None:
    # msgpack packs a tuple through our hook, so this cycle recurses in Python, not in C.
    items: list[Any] = []
    items.append(("wrapped", items))
    with pytest.raises(SerializationError, match=r"at payload\[0\]\[1\]: reference cycle"):
        serialize(items)


def test_a_value_reached_twice_without_a_cycle_is_packed_twice() -> None:
    shared = [1]
    restored = round_trip({"a": shared, "b": (shared,)})
    assert restored == {"a": [1], "b": ([1],)}
    assert restored["a"] is not restored["b"][0]


def test_nesting_deeper_than_msgpack_allows_raises_serialization_error() -> None:
    deep_list: Any = []
    deep_tuple: Any = ()
    for _ in range(5000):
        deep_list = [deep_list]
        deep_tuple = (deep_tuple,)
    with pytest.raises(SerializationError, match="nested deeper than 511 levels"):
        serialize(deep_list)
    with pytest.raises(SerializationError, match="nested"):
        serialize(deep_tuple)


def test_moderately_deep_nesting_of_tuples_round_trips() -> None:
    value: Any = ()
    for _ in range(100):
        value = (1, [value])
    assert round_trip(value) == value


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array of two with one item
        serialize({"a": 1}) + b"\x00",  # trailing bytes
        msgpack.packb(msgpack.ExtType(99, b"")),  # no such extension
        msgpack.packb(msgpack.ExtType(serializer._Ext.DATE, b"not a date")),
        msgpack.packb(msgpack.ExtType(serializer._Ext.MODEL, msgpack.packb(["no.Such", 1]))),
        b"\x81\x91\x01\x02",  # a map whose key is a list, which cannot be a dict key
        b"x" * 1000,
    ],
    ids=repr,
)
def test_bytes_that_are_not_a_payload_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError, match=r"^Cannot deserialize payload: "):
        deserialize(data)


def test_deserializing_something_else_than_bytes_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="type 'str': expected the bytes"):
        deserialize("{}")  # type: ignore[arg-type]


# Isolation.


def test_the_restored_payload_does_not_change_when_the_original_is_mutated() -> None:
    user = User(pk=1, username="ann")
    payload = {"list": [1], "dict": {"a": 1}, "set": {1}, "user": user}
    data = serialize(payload)
    payload["list"].append(2)
    payload["dict"]["b"] = 2
    payload["set"].add(2)
    user.username = "changed"
    first, second = deserialize(data), deserialize(data)
    assert first["list"] == [1] and first["dict"] == {"a": 1} and first["set"] == {1}
    assert first["user"].username == "ann"
    first["list"].append(3)
    assert second["list"] == [1]
