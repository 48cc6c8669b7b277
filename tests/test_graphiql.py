"""The GraphiQL page and its vendored assets, through Django's test client (no browser)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from django.http import Http404
from django.test import Client, RequestFactory, override_settings

from gqlws import graphiql
from gqlws.graphiql import ASSET_DIR, ASSETS, asset_view, graphiql_urls, graphiql_view
from tests.processes import ROOT

# This module is the URLconf of the tests: the page at / (default endpoint)
# and a second one under a prefix, with another endpoint.
urlpatterns = [*graphiql_urls(), *graphiql_urls("tools/graphiql/", endpoint="/api/socket/")]

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


@pytest.fixture(autouse=True)
def _urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF=__name__):
        yield


class _References(HTMLParser):
    """Every URL the page makes the browser load: script src and link href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(values["src"] or "")
        elif tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")
        self._in_script = tag == "script" and not values.get("src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts.append(data)


def references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def page_config(html: str) -> dict[str, str]:
    match = re.search(
        r'<script id="gqlws-graphiql-config" type="application/json">(.*?)</script>', html
    )
    assert match, "the page has no configuration block"
    config: dict[str, str] = json.loads(match.group(1))
    return config


def test_page_renders_graphiql_with_the_default_endpoint() -> None:
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert '<div id="graphiql">' in html
    assert page_config(html) == {"endpoint": "/graphql/"}


def test_page_renders_without_gqlws_in_installed_apps_nor_template_settings() -> None:
    with override_settings(INSTALLED_APPS=["django.contrib.contenttypes"], TEMPLATES=[]):
        graphiql._template.cache_clear()
        try:
            response = Client().get("/")
        finally:
            graphiql._template.cache_clear()
    assert response.status_code == 200
    assert '<div id="graphiql">' in response.content.decode()


def test_page_names_no_external_host_so_it_works_offline() -> None:
    html = Client().get("/").content.decode()
    found = references(html)
    assert len(found.urls) == 6  # icon, stylesheet and four scripts
    for url in found.urls:
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue  # inline, no request at all
        assert (parts.scheme, parts.netloc) == ("", ""), f"{url} is on another host"
    assert not re.search(r"https?://", html), "the page mentions an http(s) URL"


def test_every_file_the_page_loads_is_served_with_its_type_and_a_long_cache_lifetime() -> None:
    client = Client()
    for page in ("/", "/tools/graphiql/"):
        for url in references(client.get(page).content.decode()).urls:
            if url.startswith("data:"):
                continue
            response = client.get(urljoin(page, url))
            name = urlsplit(url).path.rsplit("/", 1)[-1]
            assert response.status_code == 200, url
            assert response["Content-Type"].startswith(CONTENT_TYPES[Path(name).suffix]), url
            assert response["Content-Type"].endswith("charset=utf-8")
            assert "max-age=31536000" in response["Cache-Control"]
            assert response["X-Content-Type-Options"] == "nosniff"
            assert response.content == (ASSET_DIR / name).read_bytes()


def test_asset_urls_change_with_their_content() -> None:
    html = Client().get("/").content.decode()
    versions = {url: urlsplit(url).query for url in references(html).urls}
    digest = graphiql._asset("graphiql.min.js")[1]
    assert versions[f"graphiql-assets/graphiql.min.js?v={digest}"] == f"v={digest}"


def test_license_files_are_served_next_to_the_code() -> None:
    client = Client()
    for library in ("graphiql", "react", "react-dom", "graphql-ws"):
        response = client.get(f"/graphiql-assets/{library}.LICENSE.txt")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert b"Permission is hereby granted" in response.content  # MIT, all four


def test_an_unchanged_asset_is_answered_304() -> None:
    client = Client()
    first = client.get("/graphiql-assets/react.production.min.js")
    again = client.get("/graphiql-assets/react.production.min.js", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "name", ["nope.js", "graphiql.min.js.map", "SOURCES.txt", "..%2Fgraphiql.py", "GRAPHIQL.MIN.JS"]
)
def test_names_outside_the_allow_list_give_404(name: str) -> None:
    assert Client().get(f"/graphiql-assets/{name}").status_code == 404


@pytest.mark.parametrize("name", ["../../graphiql.py", "/etc/passwd", "", "graphiql.min.js/"])
def test_asset_view_refuses_paths_even_when_routed_elsewhere(name: str) -> None:
    with pytest.raises(Http404):
        asset_view(RequestFactory().get("/whatever"), name)


def test_every_allowed_asset_is_vendored() -> None:
    for name in ASSETS:
        assert (ASSET_DIR / name).stat().st_size > 0, name


def test_the_endpoint_given_to_graphiql_urls_reaches_the_page() -> None:
    html = Client().get("/tools/graphiql/").content.decode()
    assert page_config(html) == {"endpoint": "/api/socket/"}


def test_the_endpoint_given_as_a_view_kwarg_reaches_the_page() -> None:
    response = graphiql_view(RequestFactory().get("/"), endpoint="/chat/ws/")
    assert page_config(response.content.decode()) == {"endpoint": "/chat/ws/"}
    response = graphiql_view(RequestFactory().get("/"), endpoint="wss://api.example.org/gql/")
    assert page_config(response.content.decode()) == {"endpoint": "wss://api.example.org/gql/"}


def test_the_assets_location_given_as_a_view_kwarg_reaches_the_page() -> None:
    response = graphiql_view(RequestFactory().get("/"), assets="/static/graphiql")
    urls = references(response.content.decode()).urls
    assert all(url.startswith(("data:", "/static/graphiql/")) for url in urls), urls


def test_the_endpoint_cannot_break_out_of_the_page() -> None:
    evil = "/x</script><script>alert(1)</script>/"
    html = graphiql_view(RequestFactory().get("/"), endpoint=evil).content.decode()
    assert "<script>alert(1)" not in html
    assert page_config(html) == {"endpoint": evil}


@pytest.mark.parametrize("endpoint", ["graphql/", "http://localhost/graphql/", ""])
def test_an_endpoint_that_is_neither_a_path_nor_a_ws_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        graphiql_urls(endpoint=endpoint)


def test_a_prefix_without_a_trailing_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="end with '/'"):
        graphiql_urls("graphiql")


def test_the_page_answers_only_safe_methods() -> None:
    assert Client().post("/").status_code == 405
    assert Client().head("/").status_code == 200
    assert Client().post("/graphiql-assets/graphiql.min.js").status_code == 405


def test_the_socket_scheme_follows_the_page_scheme() -> None:
    script = "".join(references(Client().get("/").content.decode()).inline_scripts)
    # wss:// under https (browsers refuse ws:// from an https page), on the
    # page's own host and port, at the configured path.
    assert (
        '(location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.endpoint'
        in script
    )


def test_every_operation_runs_on_the_graphql_transport_ws_client() -> None:
    script = "".join(references(Client().get("/").content.decode()).inline_scripts)
    assert "graphqlWs.createClient(" in script
    assert "client.subscribe(" in script
    assert "fetch(" not in script  # no HTTP fallback for queries or mutations


def test_package_data_ships_the_assets_and_the_template() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["gqlws"]
    package = ROOT / "gqlws"
    shipped = [
        *(ASSET_DIR / name for name in ASSETS),
        package / "templates" / "gqlws" / "graphiql.html",
    ]
    for file in shipped:
        relative = file.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in globs), relative
