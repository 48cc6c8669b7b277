"""``Keepalives``: the connections of a loop and interval on one timer, each on its schedule."""

from __future__ import annotations

import asyncio

import pytest

from gqlws.keepalive import Keepalives

EVERY = 0.05


class Connection:
    """Records the loop time of each of its keepalives."""

    def __init__(self, ticks: asyncio.Queue[tuple[Connection, float]], fail: bool = False) -> None:
        self.ticks = ticks
        self.fail = fail
        self.count = 0

    def _send_keepalive(self) -> None:
        self.count += 1
        self.ticks.put_nowait((self, asyncio.get_running_loop().time()))
        if self.fail:
            raise RuntimeError("socket gone")


async def next_tick(ticks: asyncio.Queue[tuple[Connection, float]]) -> tuple[Connection, float]:
    return await asyncio.wait_for(ticks.get(), 5.0)


async def test_each_connection_ticks_every_interval_after_its_add_on_one_shared_timer() -> None:
    ticks: asyncio.Queue[tuple[Connection, float]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    keepalives = Keepalives.of(EVERY)
    first, second = Connection(ticks), Connection(ticks)
    added = {first: loop.time()}
    keepalives.add(first)
    await asyncio.sleep(EVERY / 2)  # the second is half an interval behind
    added[second] = loop.time()
    keepalives.add(second)
    assert Keepalives.of(EVERY) is keepalives and len(keepalives) == 2
    timer = keepalives._timer
    assert timer is not None  # one timer for both, not one each

    seen: dict[Connection, list[float]] = {first: [], second: []}
    order = []
    while min(len(times) for times in seen.values()) < 3:
        connection, when = await next_tick(ticks)
        seen[connection].append(when)
        order.append(connection)
    assert order[:4] == [first, second, first, second]  # due order, interleaved
    for connection, times in seen.items():
        previous = added[connection]
        for when in times:
            assert when - previous >= EVERY - 1e-3  # never early
            previous = when
    keepalives.discard(first)
    keepalives.discard(second)


async def test_a_discarded_connection_ticks_no_more_and_the_last_one_stops_the_timer() -> None:
    ticks: asyncio.Queue[tuple[Connection, float]] = asyncio.Queue()
    keepalives = Keepalives.of(EVERY)
    staying, leaving = Connection(ticks), Connection(ticks)
    keepalives.add(leaving)
    keepalives.add(staying)
    keepalives.discard(leaving)
    assert leaving not in keepalives
    for _ in range(3):
        connection, _ = await next_tick(ticks)
        assert connection is staying
    assert leaving.count == 0
    keepalives.discard(staying)
    assert keepalives._timer is None and len(keepalives) == 0
    # Forgotten with its last connection: the registry keeps no loop alive.
    assert asyncio.get_running_loop() not in Keepalives._registry
    assert Keepalives.of(EVERY) is not keepalives


async def test_a_tick_that_raises_is_logged_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks: asyncio.Queue[tuple[Connection, float]] = asyncio.Queue()
    keepalives = Keepalives.of(EVERY)
    broken, healthy = Connection(ticks, fail=True), Connection(ticks)
    keepalives.add(broken)
    keepalives.add(healthy)
    while healthy.count < 2:
        await next_tick(ticks)
    assert broken.count >= 2  # still due: a failing tick does not drop it
    assert "Sending a keepalive failed" in caplog.text
    keepalives.discard(broken)
    keepalives.discard(healthy)


async def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Keepalives(asyncio.get_running_loop(), 0)
