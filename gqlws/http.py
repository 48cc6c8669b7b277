"""GraphQL over HTTP for the same schema, through the same executor as the WebSocket.

Queries and mutations only, following the GraphQL-over-HTTP conventions:

* ``POST`` with a JSON body ``{"query", "variables", "operationName"}``;
* ``GET`` with ``?query=...&variables=<JSON>&operationName=...``, for
  queries only: a mutation over GET is refused with 405 (``Allow: POST``);
* the response is ``application/graphql-response+json`` when the client
  accepts it (then a request that cannot run answers 400), else
  ``application/json`` (then it answers 200 with ``errors``, as classic
  GraphQL servers do);
* malformed requests (bad JSON, no query, wrong types) answer 400 with one
  error naming the problem; subscriptions answer 400: they are served over
  WebSocket.

Mount it with the consumer whose schema, middleware and executor it shares::

    path("graphql/", GraphQLHttpView.as_view(consumer=MyGraphqlWsConsumer))

``info.context`` is a scope built from the request (``type="http"``,
headers, cookies, ``session``, ``user``), the same shape a WebSocket
resolver sees, so resolvers need not care where a request came from.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import classonlymethod
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from graphql import OperationType

from . import runtime
from .context import OperationContext
from .execution import InvalidDocument
from .executors import CeleryExecutor, EmbeddedExecutor, Executor

__all__ = ["GraphQLHttpView"]

GRAPHQL_RESPONSE = "application/graphql-response+json"


class _BadRequest(Exception):
    """The HTTP request does not carry a GraphQL request of the expected shape."""


class GraphQLHttpView(View):
    """Serves queries and mutations of ``consumer``'s schema over HTTP."""

    consumer: Any = None
    http_method_names = ["get", "post", "options"]

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Any:  # type: ignore[override]
        if initkwargs.get("consumer", cls.consumer) is None:
            raise TypeError("GraphQLHttpView needs consumer=<your GraphqlWsConsumer subclass>")
        return csrf_exempt(super().as_view(**initkwargs))

    async def get(self, request: HttpRequest) -> HttpResponse:
        params = request.GET
        try:
            variables = _json_param(params.get("variables"), "variables")
            extensions = _json_param(params.get("extensions"), "extensions")
        except _BadRequest as error:
            return self._error(request, 400, str(error))
        body = {
            "query": params.get("query"),
            "variables": variables,
            "operationName": params.get("operationName"),
            "extensions": extensions,
        }
        return await self._serve(request, body, allow_mutation=False)

    async def post(self, request: HttpRequest) -> HttpResponse:
        content_type = request.content_type or ""
        if content_type != "application/json":
            return self._error(
                request, 415, f"Expected Content-Type application/json, got {content_type!r}"
            )
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return self._error(request, 400, "The request body is not valid JSON")
        return await self._serve(request, body, allow_mutation=True)

    async def _serve(
        self, request: HttpRequest, body: Any, *, allow_mutation: bool
    ) -> HttpResponse:
        try:
            query, variables, operation_name = _check_body(body)
        except _BadRequest as error:
            return self._error(request, 400, str(error))
        try:
            prepared = self.consumer._documents().prepare(query, operation_name)
        except InvalidDocument as invalid:
            status = 400 if _wants_graphql_response(request) else 200
            return self._respond(request, {"errors": invalid.errors}, status)
        if prepared.operation_type is OperationType.SUBSCRIPTION:
            return self._error(request, 400, "Subscriptions are served over WebSocket")
        if prepared.operation_type is OperationType.MUTATION and not allow_mutation:
            response = self._error(request, 405, "Mutations must be sent with POST")
            response["Allow"] = "POST"
            return response
        scope = await _scope_of(request)
        context = OperationContext(scope, f"http-{uuid.uuid4().hex}", prepared.operation_name)
        outcome = await _executor().run(self.consumer, "execute", prepared, variables, context)
        return self._respond(request, outcome.result, 200)

    def _respond(self, request: HttpRequest, payload: dict[str, Any], status: int) -> HttpResponse:
        content_type = GRAPHQL_RESPONSE if _wants_graphql_response(request) else "application/json"
        return JsonResponse(payload, status=status, content_type=content_type)

    def _error(self, request: HttpRequest, status: int, message: str) -> HttpResponse:
        return self._respond(request, {"errors": [{"message": message}]}, status)


def _executor() -> Executor:
    settings = runtime.settings()
    if settings.distributed:
        return CeleryExecutor(settings.OPERATION_TIMEOUT)
    return EmbeddedExecutor()


def _wants_graphql_response(request: HttpRequest) -> bool:
    return GRAPHQL_RESPONSE in request.headers.get("Accept", "")


def _json_param(raw: str | None, name: str) -> Any:
    if raw in (None, ""):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _BadRequest(f"The {name!r} parameter is not valid JSON") from None


def _check_body(body: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(body, dict):
        raise _BadRequest("The request must be a JSON object with a 'query'")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _BadRequest("The request must have a non-empty string 'query'")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise _BadRequest("'variables' must be an object or null")
    operation_name = body.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise _BadRequest("'operationName' must be a string or null")
    return query, variables, operation_name


async def _scope_of(request: HttpRequest) -> dict[str, Any]:
    """A Channels-like scope for the request, with the user already loaded."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": request.method,
        "path": request.path,
        "query_string": request.META.get("QUERY_STRING", "").encode(),
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ],
        "cookies": dict(request.COOKIES),
    }
    session = getattr(request, "session", None)
    if session is not None:
        scope["session"] = session
    if hasattr(request, "auser"):
        scope["user"] = await request.auser()
    return scope
