"""gqlws: GraphQL over WebSocket for Django Channels, with Graphene-like subscriptions.

A drop-in replacement for django-channels-graphql-ws: code written for it runs
after ``import gqlws as channels_graphql_ws``.
"""

from __future__ import annotations

from . import testing
from .aiohttp_transport import GraphqlWsTransportAiohttp
from .client import GraphqlWsClient, GraphqlWsResponseError
from .consumer import GraphqlWsConsumer
from .context import DictAsObject, OperationContext, ScopeAsContext
from .protocol import GRAPHQL_TRANSPORT_WS, GRAPHQL_WS, CloseCode
from .subscription import Subscription, broadcast
from .transport import GraphqlWsTransport

__all__ = [
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "CloseCode",
    "DictAsObject",
    "GraphqlWsClient",
    "GraphqlWsConsumer",
    "GraphqlWsResponseError",
    "GraphqlWsTransport",
    "GraphqlWsTransportAiohttp",
    "OperationContext",
    "ScopeAsContext",
    "Subscription",
    "broadcast",
    "testing",
]

__version__ = "0.1.0"
