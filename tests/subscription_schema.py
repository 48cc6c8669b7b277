"""Subscriptions the subscription tests run against (embedded mode)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any, ClassVar

import graphene

import gqlws
from tests import schema as base_schema


class Query(base_schema.Query):
    process = graphene.String(description="Where resolvers run: the process's command name")
    whoami = graphene.String()
    async_whoami = graphene.String()

    @staticmethod
    def resolve_process(root: Any, info: Any) -> str:
        import os
        import sys

        return f"{os.path.basename(sys.argv[0])} {os.getpid()}"

    @staticmethod
    def resolve_whoami(root: Any, info: Any) -> str:
        user = info.context.user
        return user.username if user.is_authenticated else "anonymous"

    @staticmethod
    async def resolve_async_whoami(root: Any, info: Any) -> str:
        user = info.context.user
        return user.username if user.is_authenticated else "anonymous"


#: (subscription class name, group argument) of every ``unsubscribed`` call.
UNSUBSCRIBED: list[tuple[str, str | None]] = []


class PublishConcurrency:
    """Counts publish calls running at the same time."""

    lock = threading.Lock()
    running = 0
    peak = 0

    @classmethod
    def enter(cls) -> None:
        with cls.lock:
            cls.running += 1
            cls.peak = max(cls.peak, cls.running)

    @classmethod
    def leave(cls) -> None:
        with cls.lock:
            cls.running -= 1


class OnEvent(gqlws.Subscription):
    """Sync callbacks; the group is an argument, publish may sleep and skip."""

    event = graphene.String()
    seq = graphene.Int()
    user_name = graphene.String()

    class Arguments:
        group = graphene.String()
        sleep_ms = graphene.Int(default_value=0)  # publish sleeps up to this
        subscribe_ms = graphene.Int(default_value=0)  # subscribe sleeps this long

    @staticmethod
    def subscribe(
        root: Any, info: Any, group: str | None = None, sleep_ms: int = 0, subscribe_ms: int = 0
    ) -> Any:
        if subscribe_ms:
            time.sleep(subscribe_ms / 1000)
        return None if group is None else [group]

    @staticmethod
    def publish(
        payload: Any, info: Any, group: str | None = None, sleep_ms: int = 0, subscribe_ms: int = 0
    ) -> Any:
        PublishConcurrency.enter()
        try:
            if sleep_ms:
                time.sleep(random.uniform(0, sleep_ms / 1000))
        finally:
            PublishConcurrency.leave()
        if payload.get("skip"):
            return OnEvent.SKIP
        if payload.get("none"):
            return None
        user = payload.get("user")
        return OnEvent(
            event=payload.get("event"),
            seq=payload.get("seq"),
            user_name=None if user is None else f"{user.username}#{user.pk}",
        )

    @staticmethod
    def unsubscribed(
        root: Any, info: Any, group: str | None = None, sleep_ms: int = 0, subscribe_ms: int = 0
    ) -> None:
        UNSUBSCRIBED.append(("OnEvent", group))


class OnChatMessage(gqlws.Subscription):
    """Async callbacks; no notification of one's own messages."""

    chatroom = graphene.String()
    text = graphene.String()
    sender = graphene.String()

    class Arguments:
        chatroom = graphene.String(required=True)
        subscribe_ms = graphene.Int(default_value=0)  # subscribe takes this long

    @staticmethod
    async def subscribe(root: Any, info: Any, chatroom: str, subscribe_ms: int = 0) -> list[str]:
        await asyncio.sleep(subscribe_ms / 1000)
        return [chatroom]

    @staticmethod
    async def publish(payload: Any, info: Any, chatroom: str, subscribe_ms: int = 0) -> Any:
        await asyncio.sleep(0)
        if payload["sender"] == info.context.get("name"):
            return OnChatMessage.SKIP
        return OnChatMessage(chatroom=chatroom, text=payload["text"], sender=payload["sender"])

    @staticmethod
    async def unsubscribed(root: Any, info: Any, chatroom: str, subscribe_ms: int = 0) -> None:
        UNSUBSCRIBED.append(("OnChatMessage", chatroom))


class SharedNews(gqlws.Subscription):
    """The same news for everyone: one publish per broadcast, whoever listens."""

    text = graphene.String()
    cohort = gqlws.Subscription.SAME_FOR_ALL
    #: publish calls so far (this process).
    calls: ClassVar[int] = 0

    @staticmethod
    def publish(payload: Any, info: Any) -> Any:
        SharedNews.calls += 1
        return SharedNews(text=payload["text"])


class PerUserNews(gqlws.Subscription):
    """News rendered per user name: one publish per distinct ``name`` in the context."""

    text = graphene.String()
    calls: ClassVar[int] = 0

    @staticmethod
    def cohort(info: Any) -> Any:
        return info.context.get("name")

    @staticmethod
    def publish(payload: Any, info: Any) -> Any:
        PerUserNews.calls += 1
        return PerUserNews(text=f"{payload['text']} for {info.context.get('name')}")


class Forbidden(gqlws.Subscription):
    """``subscribe`` refuses."""

    value = graphene.String()

    @staticmethod
    def subscribe(root: Any, info: Any) -> list[str]:
        raise PermissionError("Not allowed to subscribe")

    @staticmethod
    def publish(payload: Any, info: Any) -> Any:
        return Forbidden(value="never")


class Subscription(graphene.ObjectType):
    on_event = OnEvent.Field()
    on_chat_message = OnChatMessage.Field()
    forbidden = Forbidden.Field()
    shared_news = SharedNews.Field()
    per_user_news = PerUserNews.Field()
    not_gqlws = graphene.String()

    @staticmethod
    def resolve_not_gqlws(root: Any, info: Any) -> str:
        return "plain field"


class SetName(graphene.Mutation):
    class Arguments:
        name = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any, name: str) -> SetName:
        info.context.name = name
        return SetName(ok=True)


class SendChatMessage(graphene.Mutation):
    """Sync resolver: broadcasts from a pool thread."""

    class Arguments:
        chatroom = graphene.String(required=True)
        text = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any, chatroom: str, text: str) -> SendChatMessage:
        sender = info.context.get("name", "anonymous")
        OnChatMessage.broadcast(group=chatroom, payload={"text": text, "sender": sender})
        return SendChatMessage(ok=True)


class SendChatMessageAsync(graphene.Mutation):
    """Async resolver: awaits the broadcast on the loop."""

    class Arguments:
        chatroom = graphene.String(required=True)
        text = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    async def mutate(root: Any, info: Any, chatroom: str, text: str) -> SendChatMessageAsync:
        sender = info.context.get("name", "anonymous")
        await OnChatMessage.broadcast(group=chatroom, payload={"text": text, "sender": sender})
        return SendChatMessageAsync(ok=True)


class Login(graphene.Mutation):
    """Logs the connection in with Django's session auth (through Channels)."""

    class Arguments:
        username = graphene.String(required=True)
        password = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any, username: str, password: str) -> Login:
        import channels.auth
        import django.contrib.auth
        from asgiref.sync import async_to_sync

        user = django.contrib.auth.authenticate(username=username, password=password)
        if user is None:
            return Login(ok=False)
        async_to_sync(channels.auth.login)(info.context._asdict(), user)
        info.context.session.save()
        return Login(ok=True)


class StoreUnsendable(graphene.Mutation):
    """Stores in the context a value that cannot leave the process."""

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any) -> StoreUnsendable:
        info.context.unsendable = threading.Lock()
        return StoreUnsendable(ok=True)


class RecordThenSleep(graphene.Mutation):
    """A mutation with a visible effect: appends a line to a file, then sleeps."""

    class Arguments:
        path = graphene.String(required=True)
        seconds = graphene.Float(required=True)

    ok = graphene.Boolean()

    @staticmethod
    def mutate(root: Any, info: Any, path: str, seconds: float) -> RecordThenSleep:
        with open(path, "a") as effects:
            effects.write("executed\n")
        time.sleep(seconds)
        return RecordThenSleep(ok=True)


class Mutation(graphene.ObjectType):
    login = Login.Field()
    record_then_sleep = RecordThenSleep.Field()
    store_unsendable = StoreUnsendable.Field()
    set_name = SetName.Field()
    send_chat_message = SendChatMessage.Field()
    send_chat_message_async = SendChatMessageAsync.Field()


schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)


class SubscriptionConsumer(gqlws.GraphqlWsConsumer):
    schema = schema
    max_worker_threads = 8
    # Tests here send thousands of mutations as fast as the server answers,
    # over the default 500 messages/s (rate limits: tests/test_limits.py).
    rate_limit = None


class ConfirmingConsumer(SubscriptionConsumer):
    confirm_subscriptions = True


class SlowSocketConsumer(ConfirmingConsumer):
    """Its socket stops writing while ``gate`` is clear (a client that does not read)."""

    notification_queue_limit = 5
    gate: ClassVar[asyncio.Event | None] = None
    #: Notifications handed to the outbox so far, by every instance.
    deliveries: ClassVar[int] = 0

    def _on_delivery(self, operation: Any, delivery: Any) -> None:
        super()._on_delivery(operation, delivery)
        SlowSocketConsumer.deliveries += 1

    #: Frames that found the socket stuck.
    stuck: ClassVar[int] = 0

    async def _send_text(self, text: str) -> None:
        if self.gate is not None and not self.gate.is_set():
            SlowSocketConsumer.stuck += 1
            await self.gate.wait()
        await super()._send_text(text)


class DroppingConsumer(SlowSocketConsumer):
    notification_queue_overflow = "drop_oldest"
