"""The threads that run user code: outcomes handed back to the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gqlws.execution import run_on_loop
from gqlws.pool import run_in_pool


async def test_outcomes_finished_together_reach_the_loop_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    wake_ups = 0
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal wake_ups
        wake_ups += 1
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    release = threading.Event()
    finished = threading.Semaphore(0)

    def job(n: int) -> int:
        release.wait(5)
        if n == 3:
            finished.release()
            raise KeyError(n)
        finished.release()
        return n * n

    try:
        with ThreadPoolExecutor(max_workers=8) as executor:
            awaiting = [asyncio.ensure_future(run_in_pool(executor, job, n)) for n in range(8)]
            await asyncio.sleep(0.05)  # every job started and waits
            release.set()
            # The loop is busy (blocked here) while all eight finish.
            for _ in range(8):
                assert finished.acquire(timeout=5)
            time.sleep(0.05)
            outcomes = await asyncio.gather(*awaiting, return_exceptions=True)
    finally:
        del loop.call_soon_threadsafe
    assert outcomes[:3] == [0, 1, 4] and outcomes[4:] == [16, 25, 36, 49]
    assert isinstance(outcomes[3], KeyError)
    assert wake_ups == 1


async def test_an_outcome_after_a_drain_wakes_the_loop_again() -> None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        for n in range(50):
            assert await run_in_pool(executor, lambda n=n: n + 1) == n + 1
        with pytest.raises(ZeroDivisionError):
            await run_in_pool(executor, lambda: 1 / 0)


async def test_a_cancelled_wait_drops_the_outcome() -> None:
    started, release = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        release.wait(5)
        return "late"

    with ThreadPoolExecutor(max_workers=1) as executor:
        waiting = asyncio.ensure_future(run_in_pool(executor, job))
        await asyncio.to_thread(started.wait, 5)
        waiting.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await run_in_pool(executor, lambda: "next") == "next"


def test_the_hand_over_keeps_no_event_loop_alive() -> None:
    import gc
    import weakref

    async def one() -> int:
        run_async = run_on_loop(asyncio.get_running_loop())  # cached per loop, too

        async def seven() -> int:
            return 7

        with ThreadPoolExecutor(max_workers=1) as executor:
            return await run_in_pool(executor, run_async, seven())

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(one()) == 7
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
