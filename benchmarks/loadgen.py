"""The load generator: many WebSocket connections from one asyncio process.

The runner (``benchmarks/run.py``) starts it once per measurement, as a
separate process so that it runs on another core than the server it loads::

    echo '{"kind": "queries", "urls": ["ws://127.0.0.1:8000/graphql/"],
           "connections": 16, "queries": 2000}' | python -m benchmarks.loadgen

It reads one JSON spec on stdin and prints one JSON result on stdout. All
connections share one ``aiohttp.ClientSession`` and speak raw JSON frames
(``benchmarks/frames.py``); gqlws's own client would cost more per
connection than the server under test. Connection ``i`` goes to
``urls[i % len(urls)]`` (spread over the edges) and speaks
``graphql-transport-ws`` when ``i`` is even, legacy ``graphql-ws`` when odd
(``"protocol"`` in the spec pins one of them instead).

Two kinds of measurement:

``queries``
    ``connections`` sockets each run a closed loop (send the small history
    query, wait for its result, send the next) until ``queries`` results
    arrived in all. Reported: results per second over the measured window
    (after ``warmup`` queries per connection), p50 and p99 round trip from
    sending the frame to reading the result frame, and errors.

``fanout``
    ``subscribers`` sockets subscribe to ``onNewChatMessage`` on one fresh
    room (each then makes one query round trip, and at most
    ``CONNECT_CONCURRENCY`` sockets are being set up at once); a separate
    socket sends ``sendChatMessage`` mutations whose text is
    ``"<seq> <time.time()>"``. First, warm-up broadcasts until every
    subscriber has received one: from then on each subscription is known to
    be active. The edges' RSS (``/proc/<pid>/status`` of ``edge_pids``) is read
    before the subscribers connect and after the warm-up settles: the
    difference divided by ``subscribers`` is the memory of an idle
    subscribed connection. Then two phases: ``back_to_back`` broadcasts, each
    mutation sent as soon as the previous one's result came back (so their
    issue order is their sequence order), and ``fixed_rate`` broadcasts
    scheduled ``1 / rate`` seconds apart (still one at a time). Each phase
    waits until every notification arrived (or nothing arrived for
    ``stall_timeout`` seconds) and reports notifications delivered per
    second (from the first send to the last receipt), the end-to-end latency
    from the send time in the text to the receipt (p50, p99), and, from the
    sequence numbers each connection received: lost, duplicated and
    out-of-order notifications (all must be 0).
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.frames import (
    BEGIN,
    GRAPHQL_WS,
    PROTOCOLS,
    QUERY,
    RESULT,
    SEND,
    SUBSCRIBE,
    SUBSCRIPTION_ID,
    TRANSPORT_WS,
    parse_stamp,
    stamp,
    warmup_text,
)

__all__ = ["main", "percentile", "rss_bytes"]

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


def raise_fd_limit() -> None:
    """Thousands of sockets need thousands of descriptors: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def protocol_of(index: int, pinned: str | None) -> str:
    return pinned or PROTOCOLS[index % 2]


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


# ---- Queries ---------------------------------------------------------------


async def run_queries(spec: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = spec["urls"]
    connections: int = spec["connections"]
    total: int = max(spec["queries"], connections)
    warmup: int = spec.get("warmup", 5)
    timeout: float = spec.get("timeout", 30.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        links = await open_links(session, urls, connections, spec.get("protocol"), timeout)
        try:
            # Warm-up: document caches, thread pools and Celery prefetch, not measured.
            await asyncio.gather(*(_query_loop(link, warmup, timeout, []) for link in links))
            samples: list[float] = []
            errors: list[str] = []
            shares = [total // connections + (i < total % connections) for i in range(connections)]
            started = time.perf_counter()
            outcomes = await asyncio.gather(
                *(
                    _query_loop(link, n, timeout, samples)
                    for link, n in zip(links, shares, strict=True)
                ),
                return_exceptions=True,
            )
            elapsed = time.perf_counter() - started
            errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
            errors += [e for o in outcomes if isinstance(o, list) for e in o]
        finally:
            await close_links(links)
    return {
        "connections": connections,
        "protocols": protocol_counts(links),
        "queries": len(samples),
        "seconds": elapsed,
        "ops_per_s": len(samples) / elapsed if elapsed > 0 else None,
        "p50_ms": _ms(percentile(samples, 0.50)),
        "p99_ms": _ms(percentile(samples, 0.99)),
        "errors": len(errors),
        "error_examples": errors[:3],
    }


async def _query_loop(link: Link, count: int, timeout: float, samples: list[float]) -> list[str]:
    """``count`` round trips on ``link``; round-trip times appended to ``samples``."""
    errors: list[str] = []
    for _ in range(count):
        operation_id = link.new_id("q")
        started = time.perf_counter()
        await link.start(operation_id, QUERY, {})
        payload = await link.result_of(operation_id, timeout)
        samples.append(time.perf_counter() - started)
        if payload.get("errors") or not isinstance(
            (payload.get("data") or {}).get("history"), list
        ):
            errors.append(json.dumps(payload)[:300])
    return errors


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# ---- Fan-out ---------------------------------------------------------------


@dataclass
class Subscriber:
    """What one subscribed socket received, in arrival order."""

    link: Link
    warm: bool = False
    failed: bool = False
    seqs: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Tally:
    """Progress over all subscribers: how many stamped notifications, when the last."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.warm = 0
        self.failed = 0  # subscribers that got an error, or were closed
        self.delivered = 0
        self.last_receipt = 0.0  # time.time() of the latest notification, warm-up included
        self.changed = asyncio.Event()


async def _read_notifications(subscriber: Subscriber, tally: Tally) -> None:
    link = subscriber.link
    result_type = link.result

    def error(text: str) -> None:
        subscriber.errors.append(text)
        if not subscriber.failed:
            subscriber.failed = True
            tally.failed += 1
            tally.changed.set()

    try:
        async for message in link.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            received = time.time()
            frame = json.loads(message.data)
            kind = frame.get("type")
            if kind == "ka" or (kind == "complete" and frame.get("id") != SUBSCRIPTION_ID):
                continue  # keepalive, or the late end of the set-up query
            if kind == "ping":
                await link.send({"type": "pong"})
                continue
            if kind != result_type or frame.get("id") != SUBSCRIPTION_ID:
                error(json.dumps(frame)[:300])
                continue
            payload = frame["payload"]
            try:
                text = payload["data"]["onNewChatMessage"]["text"]
                stamped = parse_stamp(text)
            except (KeyError, TypeError, ValueError):
                error(json.dumps(frame)[:300])
                continue
            tally.last_receipt = received
            if stamped is None:
                if not subscriber.warm:
                    subscriber.warm = True
                    tally.warm += 1
            else:
                seq, sent = stamped
                subscriber.seqs.append(seq)
                subscriber.latencies.append(received - sent)
                tally.delivered += 1
            tally.changed.set()
    except (aiohttp.ClientError, OSError) as failure:
        error(repr(failure))
    # Readers are cancelled before the benchmark closes its sockets: ending here is an error.
    error(f"closed by the server, code {link.ws.close_code}")


async def _wait_for(
    condition: Callable[[], bool], tally: Tally, stall_timeout: float, deadline: float
) -> bool:
    """Wait until ``condition()``; False once nothing arrived for ``stall_timeout`` s."""
    last_progress = time.monotonic()
    while not condition():
        tally.changed.clear()
        remaining = min(
            stall_timeout - (time.monotonic() - last_progress), deadline - time.monotonic()
        )
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(tally.changed.wait(), remaining)
            last_progress = time.monotonic()
        except asyncio.TimeoutError:
            pass
    return True


class Broadcaster:
    """The separate client that broadcasts by sending ``sendChatMessage`` mutations."""

    def __init__(self, link: Link, room: str, timeout: float) -> None:
        self.link = link
        self.room = room
        self.timeout = timeout

    async def send(self, text: str) -> None:
        """One mutation, waited for: the next one is issued after it (order = sequence)."""
        operation_id = self.link.new_id("m")
        await self.link.start(operation_id, SEND, {"r": self.room, "t": text})
        payload = await self.link.result_of(operation_id, self.timeout)
        if payload.get("errors") or not (payload.get("data") or {}).get("sendChatMessage"):
            raise LoadgenError(f"sendChatMessage failed: {payload}")


async def run_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = spec["urls"]
    count: int = spec["subscribers"]
    timeout: float = spec.get("timeout", 60.0)
    stall_timeout: float = spec.get("stall_timeout", 15.0)
    deadline = time.monotonic() + spec.get("deadline", 600.0)
    edge_pids: list[int] = spec.get("edge_pids", [])
    room = f"bench-{count}-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"subscribers": count, "edges": len(urls), "room": room}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        rss_before = rss_bytes(edge_pids)
        started = time.perf_counter()
        tally = Tally(count)
        subscribers: list[Subscriber] = []
        readers: list[asyncio.Task[None]] = []

        async def subscribe(link: Link) -> None:
            # Then one query round trip, as the example's clients do for lack of a
            # confirmation: it also bounds how many subscriptions are being set up
            # at once. (A burst of thousands at once is another benchmark.)
            await link.start(SUBSCRIPTION_ID, SUBSCRIBE, {"r": room})
            operation_id = link.new_id("q")
            await link.start(operation_id, QUERY, {})
            await _result_skipping_notifications(link, operation_id, timeout)
            # Read from now on: a socket nobody reads leaves the server's pings
            # unanswered, and Daphne closes it while the others are still opening.
            subscriber = Subscriber(link)
            subscribers.append(subscriber)
            readers.append(asyncio.create_task(_read_notifications(subscriber, tally)))

        sender_link = None
        try:
            links = await open_links(session, urls, count, spec.get("protocol"), timeout, subscribe)
            result["connect_and_subscribe_s"] = time.perf_counter() - started
            result["protocols"] = protocol_counts(links)
            # The broadcaster is one more connection on the first edge, not subscribed.
            sender_link = await Link.open(session, urls[0], TRANSPORT_WS, timeout)
            broadcaster = Broadcaster(sender_link, room, timeout)
            result["warmup"] = await _warm_up(broadcaster, subscribers, tally, deadline)
            rss_after = rss_bytes(edge_pids)
            result["memory"] = {
                "edge_pids": edge_pids,
                "rss_before_bytes": rss_before,
                "rss_after_bytes": rss_after,
                "bytes_per_connection": (rss_after - rss_before) / count if edge_pids else None,
            }
            phases = {}
            seq = 0
            for name, broadcasts, rate in (
                ("back_to_back", spec.get("back_to_back", 0), None),
                ("fixed_rate", spec.get("fixed_rate", 0), spec.get("rate")),
            ):
                if broadcasts:
                    phases[name] = await _phase(
                        broadcaster,
                        subscribers,
                        tally,
                        seq,
                        broadcasts,
                        rate,
                        stall_timeout,
                        deadline,
                    )
                    seq += broadcasts
            result.update(phases)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            opened = [s.link for s in subscribers]
            await close_links(opened + ([sender_link] if sender_link else []))
    errors = [e for s in subscribers for e in s.errors]
    result["errors"] = len(errors)
    result["error_examples"] = errors[:3]
    return result


async def _result_skipping_notifications(link: Link, operation_id: str, timeout: float) -> None:
    """Wait for ``operation_id``'s result; a subscription error on the way is fatal."""
    while True:
        frame = await link.receive_frame(timeout)
        if frame.get("id") == operation_id and frame.get("type") == link.result:
            return
        if frame.get("type") in ("ka", "complete"):
            continue
        raise LoadgenError(f"Setting up a subscriber, got {json.dumps(frame)[:300]}")


async def _warm_up(
    broadcaster: Broadcaster, subscribers: list[Subscriber], tally: Tally, deadline: float
) -> dict[str, Any]:
    """Warm-up broadcasts until every subscriber received one, then let the room go quiet.

    Subscriptions are registered asynchronously (and the example sends no
    confirmation): a subscriber that received a broadcast is known to be
    active, so every later broadcast must reach it.
    """
    started = time.perf_counter()
    sent = 0
    while tally.warm < tally.subscribers:
        if time.monotonic() > deadline or tally.failed:
            examples = [e for s in subscribers for e in s.errors][:3]
            raise LoadgenError(
                f"Only {tally.warm} of {tally.subscribers} subscriptions active,"
                f" {tally.failed} failed: {examples}"
            )
        await broadcaster.send(warmup_text(sent))
        sent += 1
        # Wait while warm-ups still arrive; a stall means a new one is needed.
        await _wait_for(
            lambda: tally.warm >= tally.subscribers or tally.failed > 0, tally, 2.0, deadline
        )
    # Quiet: no warm-up notification in flight when the measured phase starts.
    while time.time() - tally.last_receipt < 0.5:
        await asyncio.sleep(0.1)
    return {"broadcasts": sent, "seconds": time.perf_counter() - started}


async def _phase(
    broadcaster: Broadcaster,
    subscribers: list[Subscriber],
    tally: Tally,
    first_seq: int,
    broadcasts: int,
    rate: float | None,
    stall_timeout: float,
    deadline: float,
) -> dict[str, Any]:
    """Send ``broadcasts`` stamped messages (back to back, or ``rate`` per second) and count."""
    expected = tally.delivered + broadcasts * len(subscribers)
    marks = [(len(s.seqs), len(s.latencies)) for s in subscribers]
    interval = 1.0 / rate if rate else 0.0
    late = 0
    first_send = time.time()
    schedule = time.monotonic()
    sends: list[float] = []
    for number in range(broadcasts):
        if interval:
            delay = schedule + number * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late += 1  # behind schedule: the previous mutation took longer than the interval
        sent = time.time()
        sends.append(sent)
        await broadcaster.send(stamp(first_seq + number + 1, sent))
    last_send = time.time()
    complete = await _wait_for(lambda: tally.delivered >= expected, tally, stall_timeout, deadline)
    last_receipt = tally.last_receipt
    latencies: list[float] = []
    lost = duplicated = out_of_order = strays = 0
    wanted = set(range(first_seq + 1, first_seq + broadcasts + 1))
    for subscriber, (seq_mark, latency_mark) in zip(subscribers, marks, strict=True):
        got = subscriber.seqs[seq_mark:]
        latencies.extend(subscriber.latencies[latency_mark:])
        seen: set[int] = set()
        highest = 0
        for seq in got:
            if seq not in wanted:
                strays += 1  # a late one of an earlier phase: already counted lost there
            elif seq in seen:
                duplicated += 1
            elif seq < highest:
                out_of_order += 1
            seen.add(seq)
            highest = max(highest, seq)
        lost += len(wanted - seen)
    delivered = len(latencies)
    window = max(last_receipt - first_send, 1e-9)
    return {
        "broadcasts": broadcasts,
        "rate_target": rate,
        "rate_achieved": (broadcasts - 1) / (last_send - sends[0]) if broadcasts > 1 else None,
        "late_sends": late,
        "expected": broadcasts * len(subscribers),
        "delivered": delivered,
        "complete": complete,
        "seconds": window,
        "notifications_per_s": delivered / window,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "strays": strays,
    }


# ---- Entry point -----------------------------------------------------------


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    kinds = {"queries": run_queries, "fanout": run_fanout}
    if spec.get("kind") not in kinds:
        raise LoadgenError(f"Unknown kind {spec.get('kind')!r}; expected one of {sorted(kinds)}")
    if spec.get("protocol") not in (None, TRANSPORT_WS, GRAPHQL_WS):
        raise LoadgenError(f"Unknown protocol {spec['protocol']!r}")
    return await asyncio.wait_for(kinds[spec["kind"]](spec), spec.get("deadline", 600.0) + 30)


def main() -> int:
    """Read a spec on stdin, print the result on stdout (exit 1 with the error on stderr)."""
    raise_fd_limit()
    spec = json.loads(sys.stdin.read())
    try:
        result = asyncio.run(run(spec))
    except (LoadgenError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
        print(f"loadgen: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
