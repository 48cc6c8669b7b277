"""A GraphiQL page that speaks GraphQL over WebSocket, served without a CDN.

The page runs every operation (queries, mutations and subscriptions) over one
``graphql-transport-ws`` socket with the ``graphql-ws`` client library, so a
server that has no HTTP GraphQL endpoint at all can still be explored. Its
JavaScript and CSS are vendored in ``gqlws/static/gqlws/graphiql/`` and served
by :func:`asset_view` from the package itself: the page works offline, and
under Daphne or uvicorn without ``django.contrib.staticfiles``.

The socket's URL is computed by the browser from the page's own address:
``wss://`` when the page came over ``https:``, ``ws://`` otherwise, on the
page's host, at the configured endpoint path. That is right behind a
TLS-terminating proxy too, where the server itself only sees plain HTTP.

Mount both the page and its assets::

    from gqlws.graphiql import graphiql_urls

    urlpatterns = [*graphiql_urls("graphiql/", endpoint="/graphql/")]

or the page alone, with its assets next to it (the page refers to them
relatively, as ``graphiql-assets/<name>``)::

    path("graphiql/", graphiql_view, {"endpoint": "/graphql/"}),
    path("graphiql/graphiql-assets/<str:name>", asset_view),
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.template import Context, Engine, Template
from django.urls import URLPattern, path
from django.views.decorators.http import condition, require_safe

__all__ = [
    "ASSETS",
    "ASSET_DIR",
    "DEFAULT_ENDPOINT",
    "asset_view",
    "graphiql_urls",
    "graphiql_view",
]

DEFAULT_ENDPOINT = "/graphql/"
ASSET_DIR = Path(__file__).resolve().parent / "static" / "gqlws" / "graphiql"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
ASSETS_SUBPATH = "graphiql-assets/"

# The only files asset_view serves, with their content types. An explicit
# list rather than "whatever is in the directory": a request can never reach
# a file that was not meant to be public, whatever its name contains.
ASSETS: dict[str, str] = {
    "graphiql.min.js": "text/javascript; charset=utf-8",
    "graphiql.min.css": "text/css; charset=utf-8",
    "react.production.min.js": "text/javascript; charset=utf-8",
    "react-dom.production.min.js": "text/javascript; charset=utf-8",
    "graphql-ws.min.js": "text/javascript; charset=utf-8",
    "graphiql.LICENSE.txt": "text/plain; charset=utf-8",
    "react.LICENSE.txt": "text/plain; charset=utf-8",
    "react-dom.LICENSE.txt": "text/plain; charset=utf-8",
    "graphql-ws.LICENSE.txt": "text/plain; charset=utf-8",
}

# Asset URLs carry a digest of their content (`?v=...`), so a year of caching
# is safe: upgrading a vendored file changes its URL. "immutable" spares the
# browser's revalidation on reload.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """The content of an allowed asset and its digest; read once per process."""
    content = (ASSET_DIR / name).read_bytes()
    return content, hashlib.sha256(content).hexdigest()[:16]


@functools.cache
def _template() -> Template:
    # A private engine, not django.template.loader: the project may not list
    # "gqlws" in INSTALLED_APPS nor enable APP_DIRS, and the page must render
    # all the same.
    engine = Engine(dirs=[str(TEMPLATE_DIR)], autoescape=True)
    return engine.get_template("gqlws/graphiql.html")


def _check_endpoint(endpoint: str) -> str:
    # A path is joined to the page's host by the browser; a full ws(s) URL is
    # taken as it is (a GraphQL server on another host). Anything else would
    # only fail later, in the browser, with a less helpful message.
    if endpoint.startswith("/") or endpoint.startswith(("ws://", "wss://")):
        return endpoint
    raise ValueError(
        f"GraphiQL endpoint must be an absolute path such as {DEFAULT_ENDPOINT!r} "
        f"or a ws:// or wss:// URL, got {endpoint!r}"
    )


@require_safe
def graphiql_view(
    request: HttpRequest, endpoint: str | None = None, assets: str = ASSETS_SUBPATH
) -> HttpResponse:
    """Render the GraphiQL page.

    ``endpoint`` is the WebSocket path of the GraphQL consumer (default
    ``/graphql/``), or a full ``ws://``/``wss://`` URL. ``assets`` is where
    the page finds its files: relative to the page (the default,
    ``graphiql-assets/``, is where :func:`graphiql_urls` puts them) or an
    absolute path.
    """
    endpoint = _check_endpoint(DEFAULT_ENDPOINT if endpoint is None else endpoint)
    if not assets.endswith("/"):
        assets += "/"

    def url(name: str) -> str:
        return f"{assets}{name}?v={_asset(name)[1]}"

    context = {
        "config": {"endpoint": endpoint},
        "graphiql_css": url("graphiql.min.css"),
        "react_js": url("react.production.min.js"),
        "react_dom_js": url("react-dom.production.min.js"),
        "graphql_ws_js": url("graphql-ws.min.js"),
        "graphiql_js": url("graphiql.min.js"),
    }
    html = _template().render(Context(context))
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    # The page itself is small and names the current asset versions: always
    # revalidate it so an upgrade is picked up at once.
    response["Cache-Control"] = "no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _asset_etag(request: HttpRequest, name: str) -> str | None:
    return _asset(name)[1] if name in ASSETS else None


@require_safe
@condition(etag_func=_asset_etag)  # answers If-None-Match with 304 and sets ETag
def asset_view(request: HttpRequest, name: str) -> HttpResponse:
    """Serve one vendored GraphiQL file; 404 for any name not in :data:`ASSETS`."""
    content_type = ASSETS.get(name)
    if content_type is None:
        raise Http404(f"No GraphiQL asset named {name!r}")
    response = HttpResponse(_asset(name)[0], content_type=content_type)
    response["Cache-Control"] = ASSET_CACHE_CONTROL
    response["X-Content-Type-Options"] = "nosniff"
    return response


def graphiql_urls(prefix: str = "", endpoint: str = DEFAULT_ENDPOINT) -> list[URLPattern]:
    """URL patterns of the page (at ``prefix``) and of its assets (under it).

    ``prefix`` is ``""`` or ends with ``/``: the page refers to its assets
    relatively, as ``graphiql-assets/<name>``, which resolves under the page
    only when the page's URL ends with a slash.
    """
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"GraphiQL prefix must be empty or end with '/', got {prefix!r}")
    kwargs: dict[str, Any] = {"endpoint": _check_endpoint(endpoint)}
    return [
        path(prefix, graphiql_view, kwargs, name="gqlws-graphiql"),
        path(f"{prefix}{ASSETS_SUBPATH}<str:name>", asset_view, name="gqlws-graphiql-asset"),
    ]
