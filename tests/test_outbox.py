"""The outgoing queue of a connection: order, and a client that leaves mid-send."""

from __future__ import annotations

import asyncio
import logging

import pytest
from autobahn.exception import Disconnected as AutobahnDisconnected

from gqlws.consumer import GraphqlWsConsumer
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


async def test_frames_go_out_in_order_and_an_idle_outbox_holds_no_sender_task() -> None:
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
    outbox.notify("3")  # starts a new sender
    outbox.close(1000, "bye")
    outbox.notify("ignored after close")
    await outbox.flushed(timeout=5)
    assert sent[3:] == ["3", "close 1000 bye"]
