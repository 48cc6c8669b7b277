"""ASGI entry point: `daphne -p 8000 example.asgi:application` from the repository root."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the schema is imported

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from example.schema import AuthenticatedChatConsumer, ChatGraphqlWsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        path("graphql/", ChatGraphqlWsConsumer.as_asgi()),
                        path("graphql-auth/", AuthenticatedChatConsumer.as_asgi()),
                    ]
                )
            )
        ),
    }
)
