"""HTTP routes: GraphiQL at /, GraphQL over HTTP at /graphql/ (WebSocket there too).

And the operations endpoints of ``gqlws.ops``: /metrics, /healthz, /readyz.
"""

from __future__ import annotations

from django.urls import path

from example.schema import ChatGraphqlWsConsumer
from gqlws import ops
from gqlws.graphiql import graphiql_urls
from gqlws.http import GraphQLHttpView

urlpatterns = [
    path("graphql/", GraphQLHttpView.as_view(consumer=ChatGraphqlWsConsumer)),
    *graphiql_urls(endpoint="/graphql/"),
    *ops.urls(),
]
