"""ASGI application of the test project: one path per consumer variant."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from tests import schema, subscription_schema  # noqa: E402

websocket_routes = URLRouter(
    [
        path("graphql/", schema.Consumer.as_asgi()),
        path("graphql-strict/", schema.StrictConsumer.as_asgi()),
        path("graphql-keepalive/", schema.KeepaliveConsumer.as_asgi()),
        path("graphql-middleware/", schema.MiddlewareConsumer.as_asgi()),
        path("graphql-broken/", schema.BrokenConsumer.as_asgi()),
        path("graphql-manager/", schema.ManagerMiddlewareConsumer.as_asgi()),
        path("graphql-unsendable/", schema.UnsendableAckConsumer.as_asgi()),
        path("graphql-limited/", schema.LimitedConsumer.as_asgi()),
        path("graphql-unlimited/", schema.UnlimitedConsumer.as_asgi()),
        path("graphql-one-thread/", schema.OneThreadConsumer.as_asgi()),
        path("subscriptions/", subscription_schema.SubscriptionConsumer.as_asgi()),
        path("subscriptions-confirm/", subscription_schema.ConfirmingConsumer.as_asgi()),
        path("subscriptions-slow/", subscription_schema.SlowSocketConsumer.as_asgi()),
        path("subscriptions-dropping/", subscription_schema.DroppingConsumer.as_asgi()),
    ]
)

application = ProtocolTypeRouter(
    {"http": get_asgi_application(), "websocket": AuthMiddlewareStack(websocket_routes)}
)
