"""The chat of django-channels-graphql-ws's README, on Django models.

Try it in GraphiQL at http://127.0.0.1:8000/::

    query read { history(chatroom: "kittens") { chatroom text sender } }
    mutation send { sendChatMessage(chatroom: "kittens", text: "Hi all!") { ok } }
    mutation login { login(username: "user", password: "pass") { ok } }
    subscription s { onNewChatMessage(chatroom: "kittens") { chatroom text sender } }

Every connection has an identity, its Django session, created on connect
when the client sent no session cookie (most WebSocket clients send no
cookies at all). The sender's name is the logged-in user's, else
"Anonymous"; nobody is notified of their own messages, and two anonymous
clients still see each other's.
"""

from __future__ import annotations

from typing import Any

import channels.auth
import django.contrib.auth
import graphene
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

import gqlws
from example.chat.models import Message


class ChatMessage(graphene.ObjectType):
    chatroom = graphene.String(required=True)
    text = graphene.String(required=True)
    sender = graphene.String(required=True)


def _sender(context: Any) -> str:
    user = context.get("user")
    return user.username if user is not None and user.is_authenticated else "Anonymous"


class Query(graphene.ObjectType):
    me = graphene.String(description="The connection's user name, or null when anonymous")
    history = graphene.List(
        graphene.NonNull(ChatMessage), chatroom=graphene.String(required=True), required=True
    )

    @staticmethod
    async def resolve_me(root: Any, info: Any) -> str | None:
        # Async: it only reads the scope, whose user Channels' AuthMiddleware
        # loaded before the connection began, so nothing here blocks, and a
        # query of async resolvers only runs on the event loop, without a
        # hop to the thread pool.
        user = info.context.get("user")
        return user.username if user is not None and user.is_authenticated else None

    @staticmethod
    def resolve_history(root: Any, info: Any, chatroom: str) -> list[Message]:
        return list(Message.objects.filter(chatroom=chatroom))


class OnNewChatMessage(gqlws.Subscription):
    """A new message in a chatroom, except one's own."""

    chatroom = graphene.String(required=True)
    text = graphene.String(required=True)
    sender = graphene.String(required=True)

    class Arguments:
        chatroom = graphene.String(required=True)

    @staticmethod
    def subscribe(root: Any, info: Any, chatroom: str) -> list[str]:
        return [chatroom]

    @staticmethod
    def publish(payload: dict[str, Any], info: Any, chatroom: str) -> Any:
        message: Message = payload["message"]
        if message.sender_session and message.sender_session == _session_key(info.context):
            return OnNewChatMessage.SKIP
        return OnNewChatMessage(chatroom=chatroom, text=message.text, sender=message.sender)


class OnChatFeed(gqlws.Subscription):
    """Every new message in a chatroom, one's own included: the same for everyone.

    Its notification does not depend on who receives it, so it declares a
    cohort: per broadcast, ``publish`` runs once and the frame is rendered
    and encoded once for all its subscribers. (``onNewChatMessage`` cannot:
    it hides the sender's own messages, so it runs per subscriber.)
    """

    cohort = gqlws.Subscription.SAME_FOR_ALL

    chatroom = graphene.String(required=True)
    text = graphene.String(required=True)
    sender = graphene.String(required=True)

    class Arguments:
        chatroom = graphene.String(required=True)

    @staticmethod
    def subscribe(root: Any, info: Any, chatroom: str) -> list[str]:
        return [chatroom]

    @staticmethod
    def publish(payload: dict[str, Any], info: Any, chatroom: str) -> OnChatFeed:
        message: Message = payload["message"]
        return OnChatFeed(chatroom=chatroom, text=message.text, sender=message.sender)


def _session_key(context: Any) -> str | None:
    session = context.get("session")
    return None if session is None else session.session_key


class SendChatMessage(graphene.Mutation, name="SendChatMessagePayload"):  # type: ignore[call-arg]
    ok = graphene.Boolean(required=True)

    class Arguments:
        chatroom = graphene.String(required=True)
        text = graphene.String(required=True)

    @staticmethod
    def mutate(root: Any, info: Any, chatroom: str, text: str) -> SendChatMessage:
        message = Message.objects.create(
            chatroom=chatroom,
            text=text,
            sender=_sender(info.context),
            sender_session=_session_key(info.context) or "",
        )
        # The model instance itself travels (serialized with its fields).
        OnNewChatMessage.broadcast(group=chatroom, payload={"message": message})
        OnChatFeed.broadcast(group=chatroom, payload={"message": message})
        return SendChatMessage(ok=True)


class Login(graphene.Mutation, name="LoginPayload"):  # type: ignore[call-arg]
    ok = graphene.Boolean(required=True)

    class Arguments:
        username = graphene.String(required=True)
        password = graphene.String(required=True)

    @staticmethod
    def mutate(root: Any, info: Any, username: str, password: str) -> Login:
        user = django.contrib.auth.authenticate(username=username, password=password)
        if user is None:
            return Login(ok=False)
        # Channels puts the user in the session stored in the scope; login()
        # wants the scope dict, hence _asdict().
        async_to_sync(channels.auth.login)(info.context._asdict(), user)
        info.context.session.save()
        return Login(ok=True)


class Mutation(graphene.ObjectType):
    send_chat_message = SendChatMessage.Field()
    login = Login.Field()


class Subscription(graphene.ObjectType):
    on_new_chat_message = OnNewChatMessage.Field()
    on_chat_feed = OnChatFeed.Field()


schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)


class ChatGraphqlWsConsumer(gqlws.GraphqlWsConsumer):
    """Serves the chat at /graphql/."""

    schema = schema
    send_keepalive_every = 30
    confirm_subscriptions = False
    rate_limit = django_settings.GQLWS_EXAMPLE_RATE_LIMIT or None

    async def on_connect(self, payload: Any) -> None:
        session = self.scope.get("session")
        if session is not None and not session.session_key:
            # A client without cookies: give the connection an identity.
            await database_sync_to_async(session.save)()


class AuthenticatedChatConsumer(ChatGraphqlWsConsumer):
    """The chat for users only, at /graphql-auth/: a token in connection_init, or a login cookie.

    Anonymous connections are rejected (4403 on graphql-transport-ws,
    connection_error on graphql-ws).
    """

    async def on_connect(self, payload: Any) -> None:
        from example.auth import user_for_token

        token = payload.get("token") if isinstance(payload, dict) else None
        if token is not None:
            self.scope["user"] = await database_sync_to_async(user_for_token)(token)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise PermissionError("Authentication required: send a token in connection_init")
        await super().on_connect(payload)
