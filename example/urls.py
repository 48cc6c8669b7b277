"""HTTP routes of the example project: a plain page saying where GraphQL lives."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        f"gqlws example: GraphQL over WebSocket at ws://{request.get_host()}/graphql/ "
        "(subprotocols graphql-transport-ws and graphql-ws).\n",
        content_type="text/plain",
    )


urlpatterns = [path("", index)]
