"""GraphiQL in a real browser: headless Chromium against the example chat on Daphne.

The page is loaded from the example project exactly as a person would open
it, with no network but 127.0.0.1: it must fetch all its files from the
server, open ``ws://`` on the page's host, introspect the schema and run a
subscription there that shows a message sent by a second client (the Python
one). Needs Debian's ``chromium`` and ``chromium-driver`` (matching versions)
and the pip package ``selenium``; without them the test is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from gqlws import GraphqlWsClient, GraphqlWsTransportAiohttp
from tests import processes

pytestmark = pytest.mark.timeout(60)

INSTALL_HINT = "apt-get install chromium chromium-driver; pip install -e '.[test]' brings selenium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
SUBSCRIPTION = 'subscription { onNewChatMessage(chatroom: "kittens") { chatroom text sender } }'
SEND = 'mutation send($text: String!) { sendChatMessage(chatroom: "kittens", text: $text) { ok } }'
RESULT_PANE_TEXT = """
    const editor = document.querySelector(".result-window .CodeMirror");
    return editor && editor.CodeMirror ? editor.CodeMirror.getValue() : "";
"""


def _chromium_and_driver() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(f"Chromium or chromedriver is not installed: {INSTALL_HINT}")
    return browser, driver


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[processes.ServerProcess]:
    """The example project on Daphne, embedded mode, on a fresh sqlite file."""
    env = processes.child_env(
        DJANGO_SETTINGS_MODULE="example.settings",
        GQLWS_EXAMPLE_DB=str(tmp_path / "example.sqlite3"),
    )
    for key in ("GQLWS_REDIS_URL", "CELERY_BROKER_URL", "POSTGRES_HOST"):
        env.pop(key, None)  # whatever the outer shell says: embedded, sqlite
    migrate = subprocess.run(
        [sys.executable, "example/manage.py", "migrate", "--verbosity", "0"],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    with processes.daphne("example.asgi:application", tmp_path, env=env) as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a fresh profile."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason=f"selenium is not installed: {INSTALL_HINT}"
    )
    binary, driver_path = _chromium_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # An explicit driver path: Selenium Manager (which would download one) never runs.
    service = webdriver.ChromeService(
        executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()  # ends Chromium, then stops chromedriver


def _result_pane(driver: Any) -> dict[str, Any] | None:
    text = driver.execute_script(RESULT_PANE_TEXT)
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else None
    return None


def test_graphiql_page_shows_a_message_another_client_sent_to_its_subscription(
    browser: Any, example_server: processes.ServerProcess, tmp_path: Path
) -> None:
    # `browser` first: without Chromium the test is skipped before a server starts.
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    origin = f"http://127.0.0.1:{example_server.port}"
    browser.get(f"{origin}/?{urlencode({'query': SUBSCRIPTION})}")
    wait = WebDriverWait(browser, 20)
    status = (By.CSS_SELECTOR, ".gqlws-status")
    wait.until(expected_conditions.presence_of_element_located(status))
    wait.until(lambda d: d.find_element(*status).get_attribute("data-status") == "connected")
    # The page derived the socket's URL from its own: ws:// on the same host.
    assert f"ws://127.0.0.1:{example_server.port}/graphql/" in browser.find_element(*status).text

    # The schema came over the socket (an introspection query): the
    # documentation explorer lists the three root types.
    browser.find_element(
        By.CSS_SELECTOR, 'button[aria-label="Show Documentation Explorer"]'
    ).click()
    docs = (By.CSS_SELECTOR, ".graphiql-doc-explorer")
    for root_type in ("Query", "Mutation", "Subscription"):
        wait.until(expected_conditions.text_to_be_present_in_element(docs, root_type))

    browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()

    # graphql-transport-ws does not acknowledge a subscription, so nothing
    # tells when the server has registered the browser's: send again until a
    # message shows, within a deadline, rather than sleep and hope.
    loop = asyncio.new_event_loop()
    transport = GraphqlWsTransportAiohttp(
        f"ws://127.0.0.1:{example_server.port}/graphql/",
        headers={"Origin": origin},  # the example validates the Origin of sockets
    )
    client = GraphqlWsClient(transport)
    shown: dict[str, Any] | None = None
    sent: list[str] = []
    try:
        loop.run_until_complete(client.connect_and_init())
        deadline = time.monotonic() + 20
        while shown is None:
            sent.append(f"Hello from Python #{len(sent) + 1}")
            result = loop.run_until_complete(client.execute(SEND, variables={"text": sent[-1]}))
            assert result == {"data": {"sendChatMessage": {"ok": True}}}
            with contextlib.suppress(TimeoutException):
                shown = WebDriverWait(browser, 0.5).until(
                    lambda d: (pane := _result_pane(d)) and "data" in pane and pane
                )
            assert time.monotonic() < deadline, (
                f"No message shown in GraphiQL after sending {len(sent)}; "
                f"server log:\n{example_server.log_tail()}"
            )
    finally:
        loop.run_until_complete(client.finalize())
        loop.close()

    message = shown["data"]["onNewChatMessage"]
    assert message["chatroom"] == "kittens"
    assert message["text"] in sent
    assert message["sender"] == "Anonymous"

    # Offline by construction: everything the page loaded came from the server.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded, "the page loaded no resources at all"
    assert {urlsplit(url).netloc for url in loaded} == {f"127.0.0.1:{example_server.port}"}

    screenshot = tmp_path / "graphiql.png"
    assert browser.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000, f"a nearly empty screenshot: {len(data)} bytes"
