"""An edge under uvicorn instead of Daphne: the graceful drain works there too.

The protocol suites run against uvicorn through the ``connect`` fixture, and
the example chats across uvicorn edges in ``test_example_cluster``; this is
what differs between servers: signals. uvicorn installs its own SIGTERM
handler; the drain takes it over on the first connection and hands back to
it once the sockets are closed with 1012.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from gqlws import GraphqlWsTransportAiohttp
from tests import processes
from tests.conftest import closed_with


@pytest.mark.timeout(60)
async def test_sigterm_on_a_uvicorn_edge_finishes_a_running_query_then_closes_with_1012(
    tmp_path: Path,
) -> None:
    env = processes.child_env(GQLWS_TEST_DB=os.environ["GQLWS_TEST_DB"])
    with processes.asgi_server(
        "tests.asgi:application", tmp_path, server="uvicorn", env=env
    ) as server:
        transport = GraphqlWsTransportAiohttp(
            f"ws://127.0.0.1:{server.port}/graphql/", subprotocols=["graphql-transport-ws"]
        )
        await transport.connect()
        try:
            await transport.send({"type": "connection_init"})
            assert (await transport.receive(timeout=10))["type"] == "connection_ack"
            await transport.send(
                {"id": "1", "type": "subscribe", "payload": {"query": "{ sleep(seconds: 1) }"}}
            )
            # Frames are handled in order: once the pong is back, the query runs.
            await transport.send({"type": "ping"})
            assert (await transport.receive(timeout=10))["type"] == "pong"
            # The server only, as a supervisor does; uvicorn alone would cut the query off.
            server.process.send_signal(signal.SIGTERM)
            result = await transport.receive(timeout=10)
            assert result == {"id": "1", "type": "next", "payload": {"data": {"sleep": "slept"}}}
            assert (await transport.receive(timeout=10))["type"] == "complete"
            code, _ = await closed_with(transport)
            assert code == 1012
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"uvicorn did not exit after the drain:\n{server.log_tail()}")
        finally:
            await transport.disconnect()
