"""Test set-up: Django settings, and the servers the protocol suite runs against.

The ``connect`` fixture is parametrized over two ways of reaching the same
consumers: in-process through Channels' ``WebsocketCommunicator``
(``gqlws.testing.GraphqlWsTransport``) and over a real socket to a Daphne
process with the aiohttp client transport. Tests that take it run twice.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

_TMP = tempfile.mkdtemp(prefix="gqlws-tests-")
atexit.register(shutil.rmtree, _TMP, True)
os.environ.setdefault("GQLWS_TEST_DB", os.path.join(_TMP, "db.sqlite3"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from gqlws import GraphqlWsTransportAiohttp  # noqa: E402
from gqlws import testing as gqlws_testing  # noqa: E402
from gqlws.transport import DEFAULT_SUBPROTOCOLS, GraphqlWsTransport  # noqa: E402
from tests import processes  # noqa: E402

Connect = Callable[..., Awaitable[GraphqlWsTransport]]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """The distributed topology for the whole run: Redis, 2 Daphne edges, 2 Celery workers."""
    from tests.cluster import Cluster

    log_dir = Path(_TMP) / "cluster"
    log_dir.mkdir(exist_ok=True)
    env = {"GQLWS_OPERATION_TIMEOUT": "15"}  # a lost worker shows up as an error in 15 s
    with Cluster(edges=2, workers=2, project="tests", log_dir=log_dir, env=env) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failing test of the cluster shows the tail of each of its processes' logs."""
    outcome: Any = yield
    report = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and running is not None:
        for process in [*running.edges, *running.workers]:
            if process is not None:
                report.sections.append((f"log of {process.log_path.name}", process.log_tail(60)))


@contextlib.contextmanager
def distributed_runtime(redis_url: str) -> Iterator[None]:
    """Switch this test process to distributed mode (it broadcasts through Redis)."""
    from django.conf import settings

    from gqlws import runtime

    keys = ("GQLWS", "CELERY_BROKER_URL", "CELERY_ACCEPT_CONTENT")
    saved = {key: getattr(settings, key) for key in keys if hasattr(settings, key)}
    settings.GQLWS = {"REDIS_URL": redis_url}
    settings.CELERY_BROKER_URL = redis_url
    settings.CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
    runtime.reset()
    try:
        yield
    finally:
        for key in keys:
            if key in saved:
                setattr(settings, key, saved[key])
            elif hasattr(settings, key):
                delattr(settings, key)
        runtime.reset()


@pytest.fixture(scope="session")
def daphne_server() -> Iterator[processes.ServerProcess]:
    """One Daphne process serving ``tests.asgi:application`` for the whole run."""
    log_dir = Path(_TMP)
    env = processes.child_env(GQLWS_TEST_DB=os.environ["GQLWS_TEST_DB"])
    with processes.daphne("tests.asgi:application", log_dir, env=env) as server:
        yield server


@pytest.fixture(scope="session")
def uvicorn_server() -> Iterator[processes.ServerProcess]:
    """One uvicorn process serving ``tests.asgi:application`` for the whole run."""
    log_dir = Path(_TMP)
    env = processes.child_env(GQLWS_TEST_DB=os.environ["GQLWS_TEST_DB"])
    with processes.asgi_server(
        "tests.asgi:application", log_dir, server="uvicorn", env=env
    ) as server:
        yield server


@pytest.fixture(params=["graphql-transport-ws", "graphql-ws"])
def subprotocol(request: pytest.FixtureRequest) -> str:
    """Each subprotocol in turn."""
    return str(request.param)


@pytest.fixture(params=["communicator", "daphne", "uvicorn"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """``await connect(path, subprotocols)``: a connected transport to a test consumer."""
    opened: list[GraphqlWsTransport] = []
    server = (
        request.getfixturevalue(f"{request.param}_server")
        if request.param != "communicator"
        else None
    )

    async def _connect(
        path: str = "graphql/", subprotocols: Sequence[str] = DEFAULT_SUBPROTOCOLS
    ) -> GraphqlWsTransport:
        transport: GraphqlWsTransport
        if server is None:
            from tests.asgi import application

            transport = gqlws_testing.GraphqlWsTransport(
                application, path, subprotocols=subprotocols
            )
        else:
            url = f"ws://127.0.0.1:{server.port}/{path}"
            transport = GraphqlWsTransportAiohttp(url, subprotocols=subprotocols)
        transport.TIMEOUT = 10.0
        opened.append(transport)
        await transport.connect()
        return transport

    yield _connect
    for transport in opened:
        await transport.disconnect()


async def closed_with(transport: GraphqlWsTransport) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    from gqlws.transport import GraphqlWsConnectionClosed

    with pytest.raises(GraphqlWsConnectionClosed) as closed:
        for _ in range(10):
            await transport.receive(timeout=5)
    return closed.value.code, closed.value.reason


@pytest.fixture
def graphql_coercions(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The variable coercions graphql-core's ``execute`` makes from now on, one item each.

    An execution built from variables coerced before (``gqlws.execution.
    coerce_variables``) makes none.
    """
    import sys

    # The module: ``graphql.execution.execute`` also names its function.
    graphql_execute = sys.modules["graphql.execution.execute"]
    calls: list[object] = []
    original = graphql_execute.get_variable_values

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(graphql_execute, "get_variable_values", counting)
    return calls
