"""HTTP routes: GraphiQL at /, GraphQL over HTTP at /graphql/ (WebSocket there too)."""

from __future__ import annotations

from django.urls import path

from example.schema import ChatGraphqlWsConsumer
from gqlws.http import GraphQLHttpView

urlpatterns = [
    path("graphql/", GraphQLHttpView.as_view(consumer=ChatGraphqlWsConsumer)),
]

try:
    from gqlws.graphiql import graphiql_urls
except ImportError:  # pragma: no cover - until the GraphiQL page lands
    pass
else:
    urlpatterns += graphiql_urls(endpoint="/graphql/")
