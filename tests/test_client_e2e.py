"""The Python client against the real consumer: both transports, both subprotocols."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

import gqlws
from gqlws.client import GraphqlWsConnectionRejected
from tests.processes import ServerProcess

MakeClient = Callable[..., gqlws.GraphqlWsClient]


@pytest.fixture(params=["communicator", "daphne", "uvicorn"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[MakeClient]:
    clients: list[gqlws.GraphqlWsClient] = []
    server: ServerProcess | None = (
        request.getfixturevalue(f"{request.param}_server")
        if request.param != "communicator"
        else None
    )

    def _make(subprotocol: str, path: str = "graphql/") -> gqlws.GraphqlWsClient:
        transport: gqlws.GraphqlWsTransport
        if server is None:
            from tests.asgi import application

            transport = gqlws.testing.GraphqlWsTransport(
                application, path, subprotocols=[subprotocol]
            )
        else:
            url = f"ws://127.0.0.1:{server.port}/{path}"
            transport = gqlws.GraphqlWsTransportAiohttp(url, subprotocols=[subprotocol])
        client = gqlws.GraphqlWsClient(transport)
        clients.append(client)
        return client

    yield _make
    for client in clients:
        if client.connected:
            await client.finalize()


async def test_client_executes_queries_and_mutations(
    make_client: MakeClient, subprotocol: str
) -> None:
    client = make_client(subprotocol)
    await client.connect_and_init()
    assert client.subprotocol == subprotocol
    result = await client.execute("query($n: String) { hello(name: $n) }", {"n": "Eve"})
    assert result == {"data": {"hello": "Hello, Eve!"}}
    mutation = 'mutation { setContext(key: "k", value: "v") { ok } }'
    assert await client.execute(mutation) == {"data": {"setContext": {"ok": True}}}
    assert await client.execute('{ contextValue(key: "k") }') == {"data": {"contextValue": "v"}}
    await client.finalize()
    assert not client.connected


async def test_client_raises_response_error_with_the_servers_errors(
    make_client: MakeClient, subprotocol: str
) -> None:
    client = make_client(subprotocol)
    await client.connect_and_init()
    with pytest.raises(gqlws.GraphqlWsResponseError) as failed:
        await client.execute("{ nope }")
    assert "Cannot query field 'nope'" in str(failed.value.response)
    with pytest.raises(gqlws.GraphqlWsResponseError):
        await client.execute("{ fail }")
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}


async def test_client_reports_a_rejected_connection(
    make_client: MakeClient, subprotocol: str
) -> None:
    client = make_client(subprotocol)
    with pytest.raises(GraphqlWsConnectionRejected):
        await client.connect_and_init(payload={"reject": True})


async def test_compatible_names_of_django_channels_graphql_ws() -> None:
    import gqlws as channels_graphql_ws

    for name in (
        "GraphqlWsConsumer",
        "GraphqlWsClient",
        "GraphqlWsTransport",
        "GraphqlWsTransportAiohttp",
        "GraphqlWsResponseError",
    ):
        assert hasattr(channels_graphql_ws, name), name
    assert issubclass(channels_graphql_ws.testing.GraphqlWsTransport, gqlws.GraphqlWsTransport)
    assert issubclass(channels_graphql_ws.testing.GraphqlWsClient, gqlws.GraphqlWsClient)
    assert issubclass(
        channels_graphql_ws.GraphqlWsTransportAiohttp, channels_graphql_ws.GraphqlWsTransport
    )
