"""GraphQL over HTTP: the conventions, and bad requests answered with a clear error."""

from __future__ import annotations

import json

import pytest
from django.test import AsyncClient

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
def client() -> AsyncClient:
    return AsyncClient()


async def test_post_runs_a_query_through_the_consumers_executor(client: AsyncClient) -> None:
    response = await client.post(
        "/graphql/",
        {"query": "query($n: String) { hello(name: $n) threadName }", "variables": {"n": "Ann"}},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = json.loads(response.content)["data"]
    assert data["hello"] == "Hello, Ann!"
    assert data["threadName"].startswith("gqlws")  # the consumer class's pool


async def test_get_runs_queries_and_negotiates_graphql_response_json(client: AsyncClient) -> None:
    response = await client.get(
        "/graphql/", {"query": "{ hello }"}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == GRAPHQL_RESPONSE
    assert json.loads(response.content) == {"data": {"hello": "Hello, world!"}}


async def test_a_mutation_over_get_is_refused_with_405(client: AsyncClient) -> None:
    response = await client.get("/graphql/", {"query": 'mutation { setName(name: "x") { ok } }'})
    assert response.status_code == 405
    assert response["Allow"] == "POST"


async def test_mutations_run_over_post(client: AsyncClient) -> None:
    response = await client.post(
        "/graphql/",
        {"query": 'mutation { setName(name: "x") { ok } }'},
        content_type="application/json",
    )
    assert json.loads(response.content) == {"data": {"setName": {"ok": True}}}


async def test_invalid_graphql_is_200_for_json_and_400_for_graphql_response(
    client: AsyncClient,
) -> None:
    body = {"query": "{ nope }"}
    legacy = await client.post("/graphql/", body, content_type="application/json")
    assert legacy.status_code == 200
    assert "nope" in json.loads(legacy.content)["errors"][0]["message"]
    modern = await client.post(
        "/graphql/", body, content_type="application/json", headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert modern.status_code == 400


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ("{not json", "application/json", 400, "not valid JSON"),
        (json.dumps({"query": "{ hello }"}), "text/plain", 415, "Expected Content-Type"),
        (json.dumps({"variables": {}}), "application/json", 400, "non-empty string 'query'"),
        (json.dumps([1]), "application/json", 400, "JSON object"),
        (
            json.dumps({"query": "{ hello }", "variables": [1]}),
            "application/json",
            400,
            "'variables'",
        ),
        (
            json.dumps({"query": "{ hello }", "operationName": 1}),
            "application/json",
            400,
            "'operationName'",
        ),
        (
            json.dumps({"query": "subscription { onEvent { seq } }"}),
            "application/json",
            400,
            "served over WebSocket",
        ),
    ],
)
async def test_bad_requests_get_a_clear_error(
    client: AsyncClient, body: str, content_type: str, status: int, message: str
) -> None:
    response = await client.post("/graphql/", body, content_type=content_type)
    assert response.status_code == status
    assert message in json.loads(response.content)["errors"][0]["message"]


async def test_bad_variables_in_a_get_are_a_clear_error(client: AsyncClient) -> None:
    response = await client.get("/graphql/", {"query": "{ hello }", "variables": "{oops"})
    assert response.status_code == 400
    assert (
        "'variables' parameter is not valid JSON"
        in json.loads(response.content)["errors"][0]["message"]
    )
