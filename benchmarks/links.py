"""The load generator's sockets: one WebSocket per ``Link``, raw JSON frames, both subprotocols.

A ``Link`` opens a WebSocket offering one subprotocol (with the ``Origin``
header the example's ``AllowedHostsOriginValidator`` wants), sends
``connection_init`` and waits for ``connection_ack``; then it sends begin
frames (``subscribe`` or ``start``) and reads results (``next`` or
``data``), answering ``ping`` and skipping keepalives. ``open_links`` opens
many, at most ``CONNECT_CONCURRENCY`` at a time, spread over the given URLs
and alternating the subprotocols::

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        links = await open_links(session, ["ws://127.0.0.1:8000/graphql/"], 16, None, 30.0)
        await links[0].start("q1", QUERY, {})
        payload = await links[0].result_of("q1", 30.0)

Also the small helpers the measurements share (percentiles, RSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import resource
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import aiohttp

from benchmarks.frames import BEGIN, PROTOCOLS, RESULT

__all__ = [
    "CONNECT_CONCURRENCY",
    "Link",
    "LoadgenError",
    "close_links",
    "frozen_heap",
    "ms",
    "open_links",
    "percentile",
    "protocol_counts",
    "raise_fd_limit",
    "rss_bytes",
]

#: Sockets opening at the same time: a server accepts a burst of thousands slowly.
CONNECT_CONCURRENCY = 64


class LoadgenError(RuntimeError):
    """The measurement could not be made (a socket refused, closed, or timed out)."""


# ---- Helpers ---------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (``fraction`` 0.5 is the median)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size of the processes, summed, from ``/proc/<pid>/status``."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What the load generator holds so far (its sockets), out of the collector's way.

    A full collection walks every object: with a thousand sockets' objects a
    run of the fan-out had seven, up to 145 ms each (gc.callbacks), and a
    latency sample taken across one counts the pause as the server's, for
    the bare app and gqlws alike. Frozen, those objects are left alone while
    a phase is measured (its collections then took 4 ms at most); what the
    phase itself makes is still collected.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def raise_fd_limit() -> None:
    """Thousands of sockets need thousands of descriptors: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:  # "unlimited" is refused for files
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def protocol_of(index: int, pinned: str | None) -> str:
    return pinned or PROTOCOLS[index % 2]


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds (None stays None)."""
    return None if seconds is None else seconds * 1000


# ---- One socket ------------------------------------------------------------


class Link:
    """One WebSocket speaking one subprotocol, with raw JSON frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.begin = BEGIN[protocol]
        self.result = RESULT[protocol]
        self._ids = 0

    def new_id(self, prefix: str) -> str:
        """An operation id never used on this socket (reusing one races its ``complete``)."""
        self._ids += 1
        return f"{prefix}{self._ids}"

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, protocol: str, timeout: float
    ) -> Link:
        netloc = urllib.parse.urlsplit(url).netloc
        # The example's route sits behind AllowedHostsOriginValidator, as browsers send Origin.
        ws = await session.ws_connect(
            url,
            protocols=[protocol],
            headers={"Origin": f"http://{netloc}"},
            max_msg_size=0,
        )
        if ws.protocol != protocol:
            await ws.close()
            raise LoadgenError(f"Asked for {protocol}, the server chose {ws.protocol}")
        link = cls(ws, protocol)
        await link.send({"type": "connection_init", "payload": {}})
        frame = await link.receive_frame(timeout)
        while frame.get("type") == "ka":
            frame = await link.receive_frame(timeout)
        if frame.get("type") != "connection_ack":
            raise LoadgenError(f"Expected connection_ack, got {frame}")
        return link

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def start(self, operation_id: str, query: str, variables: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables:
            payload["variables"] = variables
        await self.send({"id": operation_id, "type": self.begin, "payload": payload})

    async def receive_frame(self, timeout: float | None) -> dict[str, Any]:
        """The next JSON frame; ``ping`` is answered and skipped."""
        while True:
            message = await self.ws.receive(timeout)
            if message.type == aiohttp.WSMsgType.TEXT:
                frame: dict[str, Any] = json.loads(message.data)
                if frame.get("type") == "ping":
                    await self.send({"type": "pong"})
                    continue
                return frame
            if message.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            raise LoadgenError(
                f"Socket closed ({message.type.name}, code {self.ws.close_code}, {message.extra})"
            )

    async def result_of(self, operation_id: str, timeout: float) -> dict[str, Any]:
        """The result payload of ``operation_id``, skipping keepalives and other completes."""
        while True:
            frame = await self.receive_frame(timeout)
            kind = frame.get("type")
            if frame.get("id") != operation_id or kind == "complete" or kind == "ka":
                continue
            if kind != self.result:
                raise LoadgenError(f"Operation {operation_id} failed: {frame}")
            payload: dict[str, Any] = frame["payload"]
            return payload


async def open_links(
    session: aiohttp.ClientSession,
    urls: list[str],
    count: int,
    pinned: str | None,
    timeout: float,
    setup: Callable[[Link], Awaitable[None]] | None = None,
) -> list[Link]:
    """``count`` sockets, at most ``CONNECT_CONCURRENCY`` being opened (and set up) at once."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Link:
        async with gate:
            url = urls[index % len(urls)]
            link = await Link.open(session, url, protocol_of(index, pinned), timeout)
            if setup is not None:
                await setup(link)
            return link

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def close_links(links: list[Link]) -> None:
    gate = asyncio.Semaphore(256)

    async def one(link: Link) -> None:
        async with gate:
            try:
                await asyncio.wait_for(link.ws.close(), 10)
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                pass  # the socket is going away anyway; the session closes it

    await asyncio.gather(*(one(link) for link in links))


def protocol_counts(links: list[Link]) -> dict[str, int]:
    return {p: sum(1 for link in links if link.protocol == p) for p in PROTOCOLS}
