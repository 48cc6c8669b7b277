"""Broadcast payloads as bytes: msgpack, plus the Python types GraphQL apps broadcast.

``Subscription.broadcast(group=..., payload=...)`` hands its payload to
``publish`` callbacks that may run in another process (a Celery worker that
read it from Redis), so the payload becomes bytes where it is broadcast.
Embedded mode does the same: both modes accept the same payloads, and a
subscriber sees the payload as it was at the call, whatever the caller
mutates afterwards.

How it works
------------

msgpack packs ``None``, ``bool``, ``int`` (64 bits), ``float``, ``str``,
``bytes``, ``list`` and ``dict`` natively, in C. Every other supported value
becomes a msgpack *extension*: a one-byte type code (``_Ext``) and bytes,
which ``deserialize`` hands back to a decoder for that code:

- ``int`` beyond 64 bits: two's complement bytes;
- ``tuple``, ``set``, ``frozenset``: their items, packed as a list by this
  same serializer (so items may be anything supported);
- ``datetime``: ISO 8601 with its UTC offset; a ``zoneinfo`` zone also keeps
  its name, as an RFC 9557 suffix (``2024-03-31T03:00:00+02:00[Europe/Paris]``),
  and comes back as that zone (with the right ``fold``) where the receiver
  knows it, else as the fixed offset. ``date`` and ``time``: ISO 8601;
  ``timedelta``: days, seconds, microseconds; ``Decimal``: its exact string;
  ``UUID``: its 16 bytes;
- a Django model instance: its model label, its ``_state`` (database alias,
  ``adding``) and the value of each concrete field by attname, the values
  packed by this same serializer. A ``QuerySet`` is packed as the list of
  its instances (which evaluates it).

Model instances are restored the way Django loads rows, with
``Model.from_db``: same class (proxy models included), same pk and field
values, no database query. A foreign key comes back as its ``<name>_id``
value (a related object cached on the instance is not carried, reading it
queries the database); many-to-many relations are dropped, they are not
field values; fields deferred on the sender stay deferred (reading one for
serialization would query the database). Field values are taken as
``django.core.serializers``' ``python`` serializer takes them
(``value_from_object``), and kept as they are when this serializer supports
their type (Django's serializer keeps fewer types raw); others (``FieldFile``,
custom field types) go through ``value_to_string`` and come back through
``to_python``, as with ``django.core.serializers``. We do not call that
serializer itself: it emits only a model's *local* fields (so a
multi-table-inheritance child would lose its parents' fields), and it reads
many-to-many relations from the database.

Subclasses of the supported built-in types are accepted and restored as
their base type (an ``IntEnum`` as ``int``, a ``namedtuple`` as ``tuple``,
an ``OrderedDict`` as ``dict``), as ``json.dumps`` and the msgpack packer of
the library we replace do; ``bytearray`` and ``memoryview`` come back as
``bytes``. A value reachable twice is packed twice and restored as two equal
copies; a naive ``datetime``'s ``fold`` is not kept.

Fast path, then a diagnosis
---------------------------

``serialize`` first hands the whole payload to msgpack's C packer, with
``strict_types=True`` so that only *exact* built-in types are packed
natively: without it msgpack packs a ``tuple`` as an array (restored as a
list) and a ``str`` or ``int`` subclass as its base type, behind our back.
Every other value reaches ``_default``, which finds its encoder by exact
type in one dict lookup. A JSON-like payload thus never meets Python code.

When that fails, the packer's error says what failed but not where (its
``default`` hook is not told the path), and a reference cycle surfaces as
msgpack's nesting limit or as ``RecursionError``. Only then do we walk the
payload in Python, as the encoder would, keeping the path and the
containers on it, and raise ``SerializationError`` naming the offending
type and where it is::

    Cannot serialize value of type 'object' at payload['items'][2]['x']: ...

Usage::

    from gqlws.serializer import SerializationError, deserialize, serialize

    data = serialize({"message": message, "at": timezone.now()})  # bytes
    payload = deserialize(data)  # an equal, independent copy

Both directions raise ``SerializationError``, a ``TypeError`` and a
``ValueError``. The extension codes are a wire format between processes
that may run different releases: never renumber one, only add.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

import msgpack
from django.apps import apps
from django.db import models

__all__ = ["SerializationError", "deserialize", "serialize"]


class SerializationError(TypeError, ValueError):
    """A payload that cannot be serialized, or bytes that are not a serialized payload.

    A ``TypeError`` like ``json.dumps``' error for an unsupported value, and a
    ``ValueError`` like a parser's error for bad input, so callers catching
    either one keep working.
    """


class _Ext(IntEnum):
    """msgpack extension type codes: a wire format, never renumber, only add."""

    BIGINT = 1
    TUPLE = 2
    SET = 3
    FROZENSET = 4
    DATETIME = 5
    DATE = 6
    TIME = 7
    TIMEDELTA = 8
    DECIMAL = 9
    UUID = 10
    MODEL = 11


# msgpack's C packer gives up past this nesting depth; the diagnosis walk uses the same bound.
_MAX_DEPTH = 511
# What msgpack's int formats hold: int64 for negatives, uint64 for the rest.
_MIN_PACKED_INT = -(2**63)
_MAX_PACKED_INT = 2**64 - 1

_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, "
    "time, timedelta, Decimal, UUID, a Django model instance or QuerySet"
)


def serialize(payload: Any) -> bytes:
    """``payload`` as bytes for ``deserialize``; raise ``SerializationError`` naming the culprit."""
    try:
        return _pack(payload)
    except Exception as error:
        problem = _find_problem(payload)
        if problem is None and isinstance(error, RecursionError):
            # Tuples, sets and models cost Python frames per level, lists and dicts do not.
            problem = SerializationError(
                "Cannot serialize payload: tuples, sets or models in it are nested too deeply "
                "for Python's recursion limit"
            )
        elif problem is None:
            # The walk found nothing: the failure was not the payload's shape (or it changed
            # under us, another thread mutating it); say what the packer said.
            problem = SerializationError(f"Cannot serialize payload: {_describe(error)}")
        raise problem from problem.__cause__ or error


def deserialize(data: bytes) -> Any:
    """The payload ``serialize`` turned into ``data``; ``SerializationError`` if it is not one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(
            f"Cannot deserialize a value of type {_type_name(data)!r}: "
            "expected the bytes made by serialize()"
        )
    try:
        return _unpack(data)
    except Exception as error:
        raise SerializationError(f"Cannot deserialize payload: {_describe(error)}") from error


# Packing.


def _pack(value: Any) -> bytes:
    # strict_types: see "Fast path" in the module docstring.
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


def _default(value: Any) -> Any:
    """msgpack's hook for each value it does not pack natively: an ``ExtType`` or a native one."""
    cls = type(value)
    encoder = _ENCODERS.get(cls)
    if encoder is None:
        encoder = _encoder_for_subclass(cls)
    return encoder(value)


def _encode_int(value: int) -> Any:
    # msgpack calls _default for an int it cannot hold, and for int subclasses (IntEnum).
    value = int(value)
    if _MIN_PACKED_INT <= value <= _MAX_PACKED_INT:
        return value
    size = value.bit_length() // 8 + 1  # one spare bit for the sign
    return msgpack.ExtType(_Ext.BIGINT, value.to_bytes(size, "big", signed=True))


def _encode_tuple(value: tuple[Any, ...]) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.TUPLE, _pack(list(value)))


def _encode_set(value: set[Any]) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.SET, _pack(list(value)))


def _encode_frozenset(value: frozenset[Any]) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.FROZENSET, _pack(list(value)))


def _encode_datetime(value: datetime.datetime) -> msgpack.ExtType:
    # The base class's isoformat: a subclass (pendulum, freezegun) may print itself otherwise.
    text = datetime.datetime.isoformat(value)
    if isinstance(value.tzinfo, zoneinfo.ZoneInfo) and value.tzinfo.key:
        text = f"{text}[{value.tzinfo.key}]"
    return msgpack.ExtType(_Ext.DATETIME, text.encode())


def _encode_date(value: datetime.date) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.DATE, datetime.date.isoformat(value).encode())


def _encode_time(value: datetime.time) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.TIME, datetime.time.isoformat(value).encode())


def _encode_timedelta(value: datetime.timedelta) -> msgpack.ExtType:
    data = _pack([value.days, value.seconds, value.microseconds])
    return msgpack.ExtType(_Ext.TIMEDELTA, data)


def _encode_decimal(value: decimal.Decimal) -> msgpack.ExtType:
    # str() is exact: digits, exponent, sign of zero, NaN and infinities all survive.
    return msgpack.ExtType(_Ext.DECIMAL, str(value).encode())


def _encode_uuid(value: uuid.UUID) -> msgpack.ExtType:
    return msgpack.ExtType(_Ext.UUID, value.bytes)


def _encode_model(instance: models.Model) -> msgpack.ExtType:
    values, as_text = _model_fields(instance)
    state = instance._state
    data = _pack([instance._meta.label, state.db, state.adding, values, as_text])
    return msgpack.ExtType(_Ext.MODEL, data)


def _encode_queryset(queryset: models.QuerySet[Any]) -> list[Any]:
    return list(queryset)


# Field values kept as they are; other types take the trip through value_to_string/to_python.
# dict and list are JSONField and ArrayField values (their items are checked when packed).
_RAW_FIELD_TYPES = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        dict,
        list,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
    }
)


def _model_fields(instance: models.Model) -> tuple[dict[str, Any], list[str]]:
    """The instance's loaded concrete field values by attname, and the attnames sent as text."""
    deferred = instance.get_deferred_fields()
    values: dict[str, Any] = {}
    as_text: list[str] = []
    # concrete_fields, not local_fields: a multi-table-inheritance child has its parents' too.
    for field in instance._meta.concrete_fields:
        name = field.attname
        if name in deferred:
            continue
        value = field.value_from_object(instance)
        if type(value) not in _RAW_FIELD_TYPES:
            value = field.value_to_string(instance)
            as_text.append(name)
        values[name] = value
    return values, as_text


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    int: _encode_int,
    tuple: _encode_tuple,
    set: _encode_set,
    frozenset: _encode_frozenset,
    datetime.datetime: _encode_datetime,
    datetime.date: _encode_date,
    datetime.time: _encode_time,
    datetime.timedelta: _encode_timedelta,
    decimal.Decimal: _encode_decimal,
    uuid.UUID: _encode_uuid,
}

# For subclasses, first match wins: datetime before date; bool cannot be subclassed.
_SUBCLASS_ENCODERS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (models.Model, _encode_model),
    (models.QuerySet, _encode_queryset),
    (datetime.datetime, _encode_datetime),
    (datetime.date, _encode_date),
    (datetime.time, _encode_time),
    (datetime.timedelta, _encode_timedelta),
    (decimal.Decimal, _encode_decimal),
    (uuid.UUID, _encode_uuid),
    (int, _encode_int),
    (float, float),
    (str, str.__str__),  # the string itself, not what the subclass's __str__ prints
    (bytes, bytes),
    (dict, dict),
    (list, list),
    (tuple, _encode_tuple),
    (set, _encode_set),
    (frozenset, _encode_frozenset),
)


class _UnsupportedType(TypeError):
    """Raised by ``_default``; its message needs no exception name in front."""


def _encoder_for_subclass(cls: type) -> Callable[[Any], Any]:
    for base, encoder in _SUBCLASS_ENCODERS:
        if issubclass(cls, base):
            # Cached by exact type: the next instance of a model costs one dict lookup.
            _ENCODERS[cls] = encoder
            return encoder
    raise _UnsupportedType(f"not a supported type ({_SUPPORTED})")


# Diagnosis: where in the payload packing failed.

_NATIVE = frozenset({type(None), bool, int, float, str, bytes, bytearray, memoryview})
_CONTAINERS = (dict, list, tuple, set, frozenset, models.Model, models.QuerySet)
_Path = tuple[str, ...]


def _find_problem(payload: Any) -> SerializationError | None:
    """Walk the payload like the encoders do; the error for the first value they cannot pack."""
    try:
        _walk(payload, (), {}, "value")
    except SerializationError as problem:
        return problem
    except RecursionError:
        return SerializationError("Cannot serialize payload: it is nested too deeply")
    return None


def _walk(value: Any, path: _Path, ancestors: dict[int, _Path], what: str) -> None:
    if type(value) in _NATIVE:
        return
    if not isinstance(value, _CONTAINERS):
        try:
            _default(value)
        except Exception as error:
            raise _error(value, path, what, _describe(error)) from error
        return
    # Containers on the current path only: one list reached twice is no cycle.
    if id(value) in ancestors:
        reason = f"reference cycle, it is the same object as {_format_path(ancestors[id(value)])}"
        raise _error(value, path, what, reason)
    if len(path) >= _MAX_DEPTH:
        raise _error(value, path, what, f"nested deeper than {_MAX_DEPTH} levels")
    try:
        children = list(_children(value))
    except Exception as error:
        raise _error(value, path, what, _describe(error)) from error
    ancestors[id(value)] = path
    try:
        for segment, child, child_what in children:
            _walk(child, (*path, segment) if segment else path, ancestors, child_what)
    finally:
        del ancestors[id(value)]


def _children(value: Any) -> Iterator[tuple[str, Any, str]]:
    """(path segment, child, what the child is) for each child a container's encoder packs."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield "", key, "dict key"  # a bad key is reported at its dict's path
            yield f"[{key!r}]", item, "value"
    elif isinstance(value, models.Model):
        values, _ = _model_fields(value)
        for name, item in values.items():
            yield f".{name}", item, "field value"
    else:
        # Lists, tuples, querysets; a set's members are numbered in iteration order.
        for index, item in enumerate(value):
            yield f"[{index}]", item, "value"


def _error(value: Any, path: _Path, what: str, reason: str) -> SerializationError:
    where = _format_path(path)
    message = f"Cannot serialize {what} of type {_type_name(value)!r} at {where}: {reason}"
    return SerializationError(message)


def _format_path(path: _Path) -> str:
    if len(path) > 12:  # a path near the depth limit would swamp the message
        path = (*path[:6], "...", *path[-6:])
    return "payload" + "".join(path)


def _type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(error: BaseException) -> str:
    if isinstance(error, (SerializationError, _UnsupportedType)):
        return str(error)
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


# Unpacking.


def _unpack(data: bytes) -> Any:
    # strict_map_key=False: dict keys may be ints, tuples, dates... as they were packed.
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def _ext_hook(code: int, data: bytes) -> Any:
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"unknown msgpack extension type {code}")
    return decoder(data)


def _decode_bigint(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _decode_datetime(data: bytes) -> datetime.datetime:
    text = data.decode()
    key = ""
    if text.endswith("]"):
        text, _, key = text[:-1].partition("[")
    value = datetime.datetime.fromisoformat(text)
    if key:
        try:
            zone = zoneinfo.ZoneInfo(key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return value  # a receiver without that zone keeps the (exact) UTC offset
        # From the instant to the zone's wall time: gets fold right where the clock repeats.
        value = value.astimezone(zone)
    return value


def _decode_timedelta(data: bytes) -> datetime.timedelta:
    days, seconds, microseconds = _unpack(data)
    return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _decode_model(data: bytes) -> models.Model:
    label, db, adding, values, as_text = _unpack(data)
    model = apps.get_model(label)
    fields = model._meta.concrete_fields
    by_attname = {field.attname: field for field in fields}
    for name in as_text:
        if name in by_attname:
            values[name] = by_attname[name].to_python(values[name])
    # Fields the sender did not have (or had deferred) are left deferred by from_db; fields
    # the receiver does not have are ignored: processes may run different releases.
    names = [field.attname for field in fields if field.attname in values]
    instance = model.from_db(db, names, [values[name] for name in names])
    instance._state.adding = adding
    return instance


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _Ext.BIGINT: _decode_bigint,
    _Ext.TUPLE: lambda data: tuple(_unpack(data)),
    _Ext.SET: lambda data: set(_unpack(data)),
    _Ext.FROZENSET: lambda data: frozenset(_unpack(data)),
    _Ext.DATETIME: _decode_datetime,
    _Ext.DATE: lambda data: datetime.date.fromisoformat(data.decode()),
    _Ext.TIME: lambda data: datetime.time.fromisoformat(data.decode()),
    _Ext.TIMEDELTA: _decode_timedelta,
    _Ext.DECIMAL: lambda data: decimal.Decimal(data.decode()),
    _Ext.UUID: lambda data: uuid.UUID(bytes=data),
    _Ext.MODEL: _decode_model,
}
