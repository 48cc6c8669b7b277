"""Fan-out: N subscribers, a broadcaster, and the counts that must stay 0.

The algorithm (``run_fanout``; the spec's keys in ``benchmarks/loadgen.py``):

1. Read the edges' RSS, open the subscribers (each subscribes, then makes
   one query round trip), start a reader per subscriber at once (an unread
   socket leaves the server's pings unanswered), open the broadcaster.
2. Warm up: broadcast ``"w<k>"`` texts until every subscriber received one,
   then wait for the room to go quiet; read the RSS again.
3. Each phase sends stamped texts ``"<seq> <time.time()>"`` one mutation at
   a time (back to back, or on a fixed schedule), waits for all
   notifications (or a stall), then counts per subscriber, from the
   sequence numbers in arrival order: a number seen before is duplicated,
   one below the highest seen is out of order, one never seen is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.frames import (
    QUERY,
    SEND,
    SUBSCRIPTION_ID,
    SUBSCRIPTIONS,
    TRANSPORT_WS,
    parse_stamp,
    stamp,
    warmup_text,
)
from benchmarks.links import (
    Link,
    LoadgenError,
    close_links,
    frozen_heap,
    ms,
    open_links,
    percentile,
    protocol_counts,
    rss_bytes,
)

__all__ = ["run_fanout"]


@dataclass
class Subscriber:
    """What one subscribed socket received, in arrival order."""

    link: Link
    data_field: str = "onNewChatMessage"  # the subscription's field in each notification
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
                text = payload["data"][subscriber.data_field]["text"]
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
    document, field_name = SUBSCRIPTIONS[spec.get("subscription", "chat")]
    result: dict[str, Any] = {
        "subscribers": count,
        "subscription": spec.get("subscription", "chat"),
        "edges": len(urls),
        "room": room,
    }
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
            await link.start(SUBSCRIPTION_ID, document, {"r": room})
            operation_id = link.new_id("q")
            await link.start(operation_id, QUERY, {})
            await _result_skipping_notifications(link, operation_id, timeout)
            # Read from now on: a socket nobody reads leaves the server's pings
            # unanswered, and Daphne closes it while the others are still opening.
            subscriber = Subscriber(link, field_name)
            subscribers.append(subscriber)
            readers.append(asyncio.create_task(_read_notifications(subscriber, tally)))

        sender_link = None
        stage = "connecting and subscribing"
        try:
            links = await open_links(session, urls, count, spec.get("protocol"), timeout, subscribe)
            result["connect_and_subscribe_s"] = time.perf_counter() - started
            result["protocols"] = protocol_counts(links)
            # The broadcaster is one more connection on the first edge, not subscribed.
            sender_link = await Link.open(session, urls[0], TRANSPORT_WS, timeout)
            broadcaster = Broadcaster(sender_link, room, timeout)
            stage = "warm-up"
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
                    stage = name
                    with frozen_heap():
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
        except (LoadgenError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
            elapsed = time.perf_counter() - started
            raise LoadgenError(
                f"{count} subscribers, during {stage} ({elapsed:.0f} s in): {error}"
            ) from error
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
    while time.time() - tally.last_receipt < 0.5 and time.monotonic() < deadline:
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
            elif delay < -0.001:
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
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies) if latencies else None),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "strays": strays,
    }
