"""The example's chat consumer without Channels' session and auth middleware.

For ``benchmarks.memory`` only: the same consumer and schema as
``example.asgi``, routed by URL alone, so that the memory of a connection
can be split into gqlws's and the session stack's. The example's
``on_connect`` gives a connection a session only where there is one.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from example.schema import ChatGraphqlWsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("graphql/", ChatGraphqlWsConsumer.as_asgi())]),
    }
)
