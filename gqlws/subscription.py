"""``Subscription``: Graphene-like subscriptions, as in django-channels-graphql-ws.

Declare one like a Graphene mutation: payload fields, ``Arguments``, and
three callbacks (each may be a plain function or ``async def``)::

    class OnNewMessage(gqlws.Subscription):
        text = graphene.String()                      # the notification's fields

        class Arguments:
            chatroom = graphene.String()

        @staticmethod
        def subscribe(root, info, chatroom):          # optional
            return [chatroom]                         # groups; None: the class's default group

        @staticmethod
        def publish(payload, info, chatroom):         # required
            if payload["author"] == info.context.user_id:
                return OnNewMessage.SKIP              # None works too: no notification
            return OnNewMessage(text=payload["text"])

        @staticmethod
        def unsubscribed(root, info, chatroom):       # optional
            ...

    class Subscription(graphene.ObjectType):
        on_new_message = OnNewMessage.Field()

and notify from anywhere::

    OnNewMessage.broadcast(group="kittens", payload={"text": "hi"})          # sync code
    await OnNewMessage.broadcast(group="kittens", payload={"text": "hi"})    # async code
    OnNewMessage.unsubscribe(group="kittens")                                # end them all

How it runs. The subscription's field resolver is called in three *phases*,
told apart by the root value the executor passes in: ``SubscribePhase``
when a client subscribes (the resolver records the groups), ``PublishPhase``
for each notification (the resolver calls ``publish`` and the executor then
renders the returned object with the client's selection set, exactly like a
query), ``UnsubscribedPhase`` when it ends. Going through the executor each
time means arguments, variables and middleware behave as in any resolver.

Group names are namespaced by the class (``module.QualName`` then the
group), so two Subscription classes never see each other's broadcasts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any

import graphene
from graphene.types.objecttype import ObjectTypeOptions
from graphene.types.utils import yank_fields_from_attrs
from graphene.utils.get_unbound_function import get_unbound_function
from graphene.utils.props import props

from broadcast import Event, EventKind

from . import runtime
from .phases import PublishPhase, SubscribePhase, UnsubscribedPhase
from .serializer import serialize

__all__ = ["Broadcast", "Subscription", "broadcast"]


class _SameForAll:
    """``cohort`` value: ``publish`` gives every subscriber the same result."""

    def __repr__(self) -> str:
        return "Subscription.SAME_FOR_ALL"


SAME_FOR_ALL = _SameForAll()


class _Skip:
    """The value ``publish`` returns to suppress one notification."""

    def __repr__(self) -> str:
        return "Subscription.SKIP"


SKIP = _Skip()


def _then(value: Any, after: Callable[[Any], Any]) -> Any:
    """``after(value)``, or a coroutine doing it once ``value`` is awaited."""
    if inspect.isawaitable(value):

        async def _await() -> Any:
            return after(await value)

        return _await()
    return after(value)


class Broadcast:
    """``Sub.broadcast``: notify the subscribers of a group of ``Sub``.

    * ``Sub.broadcast(group=, payload=)`` in sync code, ``await
      Sub.broadcast(group=, payload=)`` in async code (it returns a coroutine
      when the calling thread runs an event loop);
    * ``Sub.broadcast.delay(group=, payload=)`` from anywhere (views, Celery
      tasks, scripts, async code alike): never a coroutine; returns the
      issued ``broadcast.Event`` once it has its offset, while the fan-out
      runs on the workers (in embedded mode, in the thread pools);
    * ``Sub.broadcast.delay_on_commit(...)``: the same, once the current
      database transaction commits (nothing is sent if it rolls back).

    Every form returns once the notification has its place in the group's
    order, so two broadcasts in a row reach every subscriber in that order.
    """

    def __init__(self, subscription: type[Subscription]) -> None:
        self.subscription = subscription

    def __call__(self, group: str | None = None, payload: Any = None) -> Any:
        if _in_event_loop():
            return self.subscription.broadcast_async(group=group, payload=payload)
        return self.subscription.broadcast_sync(group=group, payload=payload)

    def delay(self, group: str | None = None, payload: Any = None) -> Event:
        name = self.subscription._group_name(group)
        return runtime.issue(name, EventKind.PUBLISH, serialize(payload))

    def delay_on_commit(
        self, group: str | None = None, payload: Any = None, using: str | None = None
    ) -> None:
        from django.db import transaction

        data = serialize(payload)  # fail now, in the view, not at commit time
        name = self.subscription._group_name(group)
        transaction.on_commit(
            functools.partial(runtime.issue, name, EventKind.PUBLISH, data), using=using
        )


class BroadcastDescriptor:
    """Binds ``Broadcast`` to the Subscription class it is read from."""

    def __get__(self, instance: Any, owner: type[Subscription]) -> Broadcast:
        return Broadcast(owner)


class SubscriptionOptions(ObjectTypeOptions):
    arguments: dict[str, Any] | None = None
    output: Any = None
    subscribe: Callable[..., Any] | None = None
    publish: Callable[..., Any] | None = None
    unsubscribed: Callable[..., Any] | None = None


class Subscription(graphene.ObjectType):
    """Subclass to define a GraphQL subscription. See the module docstring."""

    #: Return it from ``publish`` to send nothing to this subscriber.
    SKIP = SKIP
    #: A ``cohort`` declaring that ``publish`` does not depend on the connection.
    SAME_FOR_ALL = SAME_FOR_ALL

    #: Which subscribers are sure to get the same notification (see the module
    #: docstring): None (the default, as in the reference library) - each one
    #: its own; ``SAME_FOR_ALL``; or ``cohort(info) -> key`` (say, the user id)
    #: when ``publish`` depends on the connection only through that key.
    #: Subscribers with the same document, variables and cohort get one
    #: ``publish`` call and one encoded frame per broadcast.
    cohort: Any = None

    class Meta:
        abstract = True

    @classmethod
    def __init_subclass_with_meta__(  # type: ignore[override]
        cls,
        subscribe: Callable[..., Any] | None = None,
        publish: Callable[..., Any] | None = None,
        unsubscribed: Callable[..., Any] | None = None,
        output: Any = None,
        arguments: dict[str, Any] | None = None,
        _meta: SubscriptionOptions | None = None,
        **options: Any,
    ) -> None:
        if _meta is None:
            _meta = SubscriptionOptions(cls)
        fields: dict[str, Any] = {}
        output = output or getattr(cls, "Output", None)
        if not output:
            for base in reversed(cls.__mro__):
                fields.update(yank_fields_from_attrs(base.__dict__, _as=graphene.Field))
            output = cls
        if not arguments:
            arguments_class = getattr(cls, "Arguments", None)
            arguments = props(arguments_class) if arguments_class else {}
        publish = publish or getattr(cls, "publish", None)
        if publish is None:
            raise TypeError(f"Subscription {cls.__name__} must define a 'publish' method")
        _meta.fields = {**(_meta.fields or {}), **fields}
        _meta.output = output
        _meta.arguments = arguments
        _meta.publish = get_unbound_function(publish)
        callback = subscribe or getattr(cls, "subscribe", None)
        _meta.subscribe = get_unbound_function(callback) if callback else None
        callback = unsubscribed or getattr(cls, "unsubscribed", None)
        _meta.unsubscribed = get_unbound_function(callback) if callback else None
        super().__init_subclass_with_meta__(_meta=_meta, **options)

    @classmethod
    def Field(
        cls,
        name: str | None = None,
        description: str | None = None,
        deprecation_reason: str | None = None,
        required: bool = False,
    ) -> graphene.Field:
        """The field to mount on the schema's root Subscription type."""
        return graphene.Field(
            cls._meta.output,
            args=cls._meta.arguments,
            resolver=cls._resolve,
            name=name,
            description=description or cls._meta.description,
            deprecation_reason=deprecation_reason,
            required=required,
        )

    # ---- The three phases ----------------------------------------------------

    @classmethod
    def _resolve(cls, root: Any, info: Any, **args: Any) -> Any:
        meta = cls._meta
        if isinstance(root, PublishPhase):

            def published(value: Any) -> Any:
                if value is None or value is SKIP:
                    root.skipped = True
                    return None
                return value

            return _then(meta.publish(root.payload, info, **args), published)
        if isinstance(root, SubscribePhase):
            root.subscription = cls
            if meta.subscribe is None:
                root.groups = [cls._subscribed_group_name(None)]
                root.cohort = cls._cohort_of(info)
                return None

            root.cohort = cls._cohort_of(info)

            def subscribed(groups: Any) -> None:
                root.groups = cls._group_names(groups)

            return _then(meta.subscribe(None, info, **args), subscribed)
        if isinstance(root, UnsubscribedPhase):
            if meta.unsubscribed is None:
                return None
            return _then(meta.unsubscribed(None, info, **args), lambda _: None)
        raise RuntimeError(
            f"Subscription field of {cls.__name__} resolved outside a subscription: "
            "subscriptions are served by GraphqlWsConsumer"
        )

    @classmethod
    def _cohort_of(cls, info: Any) -> bytes | None:
        declared = inspect.getattr_static(cls, "cohort")
        if isinstance(declared, staticmethod):
            declared = declared.__func__
        if declared is None:
            return None
        if declared is SAME_FOR_ALL:
            return b"*"
        if not callable(declared):
            raise TypeError(
                f"{cls.__name__}.cohort must be None, Subscription.SAME_FOR_ALL or a function "
                f"of info, got {declared!r}"
            )
        return serialize(declared(info))

    @classmethod
    def _group_name(cls, group: str | None) -> str:
        prefix = f"{cls.__module__}.{cls.__qualname__}"
        return prefix if group is None else f"{prefix}/{group}"

    @classmethod
    def _subscribed_group_name(cls, group: str | None) -> str:
        # Interned: the subscriptions of a group (its edge route, its fabric
        # registration) all hold one string, not a copy each.
        return sys.intern(cls._group_name(group))

    @classmethod
    def _group_names(cls, groups: Any) -> list[str]:
        if groups is None:
            return [cls._subscribed_group_name(None)]
        if isinstance(groups, str) or not isinstance(groups, Iterable):
            raise TypeError(
                f"{cls.__name__}.subscribe must return a list of group names or None, "
                f"got {type(groups).__name__}"
            )
        names = list(groups)
        for group in names:
            if not isinstance(group, str):
                raise TypeError(
                    f"{cls.__name__}.subscribe returned a group that is not a string: {group!r}"
                )
        return [cls._subscribed_group_name(group) for group in names]

    # ---- Notifying ------------------------------------------------------------

    #: ``Sub.broadcast(group=, payload=)``, ``Sub.broadcast.delay(...)``,
    #: ``Sub.broadcast.delay_on_commit(...)``: see ``Broadcast``.
    broadcast = BroadcastDescriptor()

    @classmethod
    def broadcast_sync(cls, group: str | None = None, payload: Any = None) -> None:
        """``broadcast`` for code with no running event loop in its thread."""
        runtime.issue(cls._group_name(group), EventKind.PUBLISH, serialize(payload))

    @classmethod
    async def broadcast_async(cls, group: str | None = None, payload: Any = None) -> None:
        """``broadcast`` for coroutines."""
        await runtime.issue_async(cls._group_name(group), EventKind.PUBLISH, serialize(payload))

    @classmethod
    def unsubscribe(cls, group: str | None = None) -> Any:
        """End every subscription of ``group`` (after the notifications issued before)."""
        if _in_event_loop():
            return cls.unsubscribe_async(group=group)
        return cls.unsubscribe_sync(group=group)

    @classmethod
    def unsubscribe_sync(cls, group: str | None = None) -> None:
        """``unsubscribe`` for code with no running event loop in its thread."""
        runtime.issue(cls._group_name(group), EventKind.UNSUBSCRIBE, b"")

    @classmethod
    async def unsubscribe_async(cls, group: str | None = None) -> None:
        """``unsubscribe`` for coroutines."""
        await runtime.issue_async(cls._group_name(group), EventKind.UNSUBSCRIBE, b"")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _ModuleBroadcast:
    """``gqlws.broadcast``: broadcast to a Subscription named by class or dotted path.

    For code that should not import the schema (a Celery task, a management
    command)::

        gqlws.broadcast.delay("chat.schema.OnNewMessage", group="kittens", payload={...})
        gqlws.broadcast.delay_on_commit(OnNewMessage, group="kittens", payload={...})
    """

    @staticmethod
    def _resolve(subscription: type[Subscription] | str) -> type[Subscription]:
        if isinstance(subscription, str):
            import importlib

            module, _, name = subscription.rpartition(".")
            subscription = getattr(importlib.import_module(module), name)
        if not (isinstance(subscription, type) and issubclass(subscription, Subscription)):
            raise TypeError(
                f"Expected a gqlws Subscription class or its path, got {subscription!r}"
            )
        return subscription

    def delay(
        self, subscription: type[Subscription] | str, group: str | None = None, payload: Any = None
    ) -> Event:
        return self._resolve(subscription).broadcast.delay(group=group, payload=payload)

    def delay_on_commit(
        self,
        subscription: type[Subscription] | str,
        group: str | None = None,
        payload: Any = None,
        using: str | None = None,
    ) -> None:
        broadcast = self._resolve(subscription).broadcast
        broadcast.delay_on_commit(group=group, payload=payload, using=using)


broadcast = _ModuleBroadcast()
