"""``info.context``: the connection's Channels scope, as a dict and as an object.

Resolvers see one ``OperationContext`` per operation, a thin view over the
connection's scope dict::

    def resolve_something(root, info):
        info.context.fortytwo = 42            # same as info.context["fortytwo"] = 42
        assert info.context["fortytwo"] == 42
        info.context.channels_scope           # the scope dict itself
        info.context._asdict()                # idem, for APIs that want a dict

Writes go to the scope, so they persist for the connection's lifetime and
every later operation of that connection sees them.

The view is over *a* mapping, not necessarily the live scope: a worker in
another process builds the same view over a snapshot of the scope wrapped
in ``TrackingDict``, then ships ``TrackingDict.delta()`` back, and the edge
applies it to the live scope with ``apply_delta``. Resolvers cannot tell the
difference, which is the point.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = [
    "ContextDelta",
    "DictAsObject",
    "OperationContext",
    "ScopeAsContext",
    "TrackingDict",
    "apply_delta",
]


class DictAsObject:
    """Attribute and item access to one mapping; names starting with ``_`` stay private."""

    __slots__ = ("_dict",)

    def __init__(self, proxy_to: MutableMapping[str, Any]) -> None:
        object.__setattr__(self, "_dict", proxy_to)

    def _asdict(self) -> MutableMapping[str, Any]:
        """The wrapped mapping itself (``channels.auth.login`` wants the scope dict)."""
        return self._dict

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._dict[name]
        except KeyError:
            raise AttributeError(f"Context has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"Cannot set private attribute {name!r} on the context")
        self._dict[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._dict[name]
        except KeyError:
            raise AttributeError(f"Context has no attribute {name!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._dict[key] = value

    def __delitem__(self, key: str) -> None:
        del self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._dict!r})"


class ScopeAsContext(DictAsObject):
    """The Channels scope seen as ``info.context``."""

    __slots__ = ()

    @property
    def channels_scope(self) -> MutableMapping[str, Any]:
        """The Channels scope of the connection."""
        return self._dict

    @property
    def channel_name(self) -> str | None:
        """The consumer's channel name, where a channel layer is configured."""
        return self._dict.get("channel_name")


class OperationContext(ScopeAsContext):
    """The context of one GraphQL operation: the scope plus the operation's identity."""

    __slots__ = ("_operation_id", "_operation_name")

    def __init__(
        self,
        scope: MutableMapping[str, Any],
        operation_id: str | None = None,
        operation_name: str | None = None,
    ) -> None:
        super().__init__(scope)
        object.__setattr__(self, "_operation_id", operation_id)
        object.__setattr__(self, "_operation_name", operation_name)

    @property
    def graphql_operation_id(self) -> str | None:
        """The id the client gave the operation."""
        return self._operation_id

    @property
    def graphql_operation_name(self) -> str | None:
        """The operation name of the request, if it had one."""
        return self._operation_name


ContextDelta = tuple[dict[str, Any], list[str]]
"""``(keys set, keys deleted)``: what resolvers changed in a context."""


class TrackingDict(dict[str, Any]):
    """A dict that remembers which keys were written or deleted since it was built.

    Only top-level writes are seen: a resolver that mutates a list stored in
    the context must store it again for the change to travel back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set: set[str] = set()
        self._deleted: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._set.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._set.discard(key)
        self._deleted.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._set.discard(key)
            self._deleted.add(key)
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def delta(self) -> ContextDelta:
        """What changed: the keys set (with their values) and the keys deleted."""
        return {key: self[key] for key in self._set}, sorted(self._deleted)


def apply_delta(scope: MutableMapping[str, Any], delta: ContextDelta) -> None:
    """Merge a ``TrackingDict.delta()`` into a connection's scope."""
    changed, deleted = delta
    scope.update(changed)
    for key in deleted:
        scope.pop(key, None)
