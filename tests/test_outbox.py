"""The outgoing queue of a connection: order, inline sends, a client that leaves mid-send."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest
from autobahn.exception import Disconnected as AutobahnDisconnected
from channels.sessions import InstanceSessionWrapper

from gqlws.consumer import GraphqlWsConsumer, _frame_sender
from gqlws.outbox import Disconnected, Outbox


async def test_a_socket_gone_mid_send_ends_the_sender_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        if len(sent) == 2:
            raise Disconnected
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        raise AssertionError("no close frame for a socket that is gone")

    outbox = Outbox(send, close, limit=10)
    for n in range(5):
        outbox.notify(str(n))
    with caplog.at_level(logging.DEBUG, logger="gqlws"):
        outbox.start()
        await outbox.flushed(timeout=5)
    assert sent == ["0", "1"]
    assert outbox.closing and len(outbox) == 0
    outbox.notify("later")  # ignored: nothing queues for a gone socket
    assert len(outbox) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("error", [AutobahnDisconnected("closed"), ConnectionResetError()])
async def test_the_consumer_reports_a_server_s_send_on_a_closed_socket_as_disconnected(
    error: Exception,
) -> None:
    # Daphne raises autobahn's Disconnected, uvicorn its ClientDisconnected
    # (an OSError): both mean the client left, not a bug.
    consumer = GraphqlWsConsumer()

    async def base_send(message: object) -> None:
        raise error

    consumer.base_send = base_send
    with pytest.raises(Disconnected):
        await consumer._send_text("{}")
    with pytest.raises(Disconnected):
        await consumer._send_close(1000, "")


async def test_frames_go_out_in_order_and_an_idle_outbox_holds_no_sender_task_nor_queue() -> None:
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(text: str) -> None:
        await gate.wait()
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        sent.append(f"close {code} {reason}")

    outbox = Outbox(send, close, limit=10)
    outbox.reply("queued before the socket was accepted")
    assert outbox._sender is None
    outbox.start()
    outbox.notify("1")
    outbox.reply("2")
    gate.set()
    await outbox.flushed(timeout=5)
    assert sent == ["queued before the socket was accepted", "1", "2"]
    assert outbox._sender is not None and outbox._sender.done()  # ended: nothing to send
    assert outbox._frames is None  # nor an empty queue (~0.7 KiB per idle socket)
    outbox.notify("3")  # starts a new sender
    outbox.close(1000, "bye")
    outbox.notify("ignored after close")
    await outbox.flushed(timeout=5)
    assert sent[3:] == ["3", "close 1000 bye"]


async def test_a_send_that_completes_at_once_is_made_inline_without_a_task() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:  # Daphne's: never waits
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        sent.append(f"close {code}")

    spawned: list[object] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
        spawned.append(coro)
        return asyncio.get_running_loop().create_task(coro)

    outbox = Outbox(send, close, limit=10, spawn=spawn)
    outbox.start()
    for n in range(100):
        outbox.notify(str(n))
    assert sent == [str(n) for n in range(100)]  # sent within the calls
    assert spawned == [] and outbox._sender is None
    outbox.close(1000, "bye")  # the close itself goes through a task
    await outbox.flushed(timeout=5)
    assert sent[-1] == "close 1000" and len(spawned) == 1


async def test_a_send_that_must_wait_goes_on_in_a_task_and_keeps_the_order() -> None:
    sent: list[str] = []
    gates: dict[str, asyncio.Event] = {"2": asyncio.Event()}

    async def send(text: str) -> None:
        gate = gates.get(text)
        if gate is not None:
            await gate.wait()  # the transport applies backpressure on this frame
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        sent.append("close")

    outbox = Outbox(send, close, limit=10)
    outbox.start()
    for n in range(1, 4):
        outbox.notify(str(n))
    assert sent == ["1"] and outbox._sender is not None and not outbox._sender.done()
    outbox.notify("4")  # queued behind the waiting send
    gates["2"].set()
    await outbox.flushed(timeout=5)
    assert sent == ["1", "2", "3", "4"]
    outbox.notify("5")  # inline again
    assert sent[-1] == "5"


async def test_a_task_cancelled_during_a_waiting_send_cancels_that_send() -> None:
    cancelled = asyncio.Event()

    async def send(text: str) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def close(code: int, reason: str) -> None:
        pass

    outbox = Outbox(send, close, limit=10)
    outbox.start()
    outbox.notify("slow")
    assert outbox._sender is not None
    await asyncio.sleep(0)
    outbox._sender.cancel()
    await asyncio.wait([outbox._sender], timeout=5)
    assert cancelled.is_set() and outbox._sender.cancelled()


async def test_an_inline_send_that_fails_raises_in_a_task_of_the_owner() -> None:
    async def send(text: str) -> None:
        raise ValueError("a bug in a send")

    async def close(code: int, reason: str) -> None:
        pass

    outbox = Outbox(send, close, limit=10)
    outbox.start()
    outbox.notify("x")  # does not raise into the caller (a delivery, a reply)
    assert outbox._sender is not None
    with pytest.raises(ValueError, match="a bug in a send"):
        await outbox._sender


async def test_frames_skip_the_session_middleware_s_send_but_no_other_wrapper() -> None:
    # Channels' SessionMiddleware saves sessions on HTTP responses only: a
    # WebSocket frame goes to the send it wraps. Other wrappers stay.
    received: list[dict[str, Any]] = []

    async def asgi_send(message: dict[str, Any]) -> None:
        received.append(message)

    wrapper = InstanceSessionWrapper({"cookies": {}}, asgi_send)
    assert _frame_sender(wrapper.send) is asgi_send
    consumer = GraphqlWsConsumer()
    consumer.base_send = wrapper.send
    await consumer._send_text("{}")
    assert received == [{"type": "websocket.send", "text": "{}"}]

    async def other_wrapper(message: dict[str, Any]) -> None:
        await wrapper.send(message)

    assert _frame_sender(other_wrapper) is other_wrapper

    class SavesOnFrames(InstanceSessionWrapper):
        save_message_types = ["http.response.start", "websocket.send"]

    saving = SavesOnFrames({"cookies": {}}, asgi_send)
    assert _frame_sender(saving.send) == saving.send
