"""HTTP routes of the test project: a sync Django view that broadcasts, metrics, health."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from gqlws import ops
from gqlws.http import GraphQLHttpView
from tests.subscription_schema import OnEvent, SubscriptionConsumer


@csrf_exempt
def notify(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    OnEvent.broadcast(group=body["group"], payload=body["payload"])
    return HttpResponse("sent")


urlpatterns = [
    path("notify/", notify),
    path("graphql/", GraphQLHttpView.as_view(consumer=SubscriptionConsumer)),
    *ops.urls(),
]
