"""Subscriptions in embedded mode: groups, order, SKIP, confirmation, ends, slow clients."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

import gqlws
from gqlws import runtime
from gqlws.transport import GraphqlWsConnectionClosed
from tests.conftest import distributed_runtime
from tests.processes import ServerProcess
from tests.subscription_schema import (
    UNSUBSCRIBED,
    OnEvent,
    PublishConcurrency,
    SlowSocketConsumer,
)

ON_EVENT = "subscription($g: String, $ms: Int) { onEvent(group: $g, sleepMs: $ms) { event seq } }"
ON_CHAT = "subscription($room: String!) { onChatMessage(chatroom: $room) { chatroom text sender } }"
SEND = (
    "mutation($room: String!, $text: String!) "
    "{ sendChatMessage(chatroom: $room, text: $text) { ok } }"
)
SET_NAME = "mutation($name: String!) { setName(name: $name) { ok } }"

MakeClient = Callable[..., Any]


@pytest.fixture(params=["embedded", "distributed"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both modes: one process, or 2 Daphne edges + 2 Celery workers + Redis."""
    if request.param == "embedded":
        yield "embedded"
        return
    cluster = request.getfixturevalue("cluster")
    with distributed_runtime(cluster.redis.url):
        yield "distributed"


@pytest.fixture
async def client_factory(
    request: pytest.FixtureRequest, subprotocol: str
) -> AsyncIterator[MakeClient]:
    """Clients of the mode under test; in distributed mode they alternate between edges."""
    mode = request.getfixturevalue("mode") if "mode" in request.fixturenames else "embedded"
    cluster = request.getfixturevalue("cluster") if mode == "distributed" else None
    clients: list[gqlws.testing.GraphqlWsClient] = []

    async def make(path: str = "subscriptions-confirm/") -> gqlws.testing.GraphqlWsClient:
        transport: gqlws.GraphqlWsTransport
        if cluster is None:
            from tests.asgi import application

            transport = gqlws.testing.GraphqlWsTransport(
                application, path, subprotocols=[subprotocol]
            )
        else:
            edge = cluster.edge_urls[len(clients) % len(cluster.edge_urls)]
            transport = gqlws.GraphqlWsTransportAiohttp(edge + path, subprotocols=[subprotocol])
            transport.TIMEOUT = 30
        client = gqlws.testing.GraphqlWsClient(transport)
        await client.connect_and_init()
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.connected:
            await client.finalize()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def group_subscribers(group: str | None) -> int:
    """Subscriptions registered in an OnEvent group, in the fabric of the mode under test."""
    return runtime.fabric().subscriber_count(OnEvent._group_name(group), 2**62)


async def test_a_thousand_broadcasts_arrive_complete_and_in_order_with_concurrent_publish(
    mode: str,
    client_factory: MakeClient,
) -> None:
    first, second = await client_factory(), await client_factory()
    group = f"one-{mode}-{time.monotonic_ns()}"
    sub = await first.subscribe(ON_EVENT, variables={"g": group, "ms": 5})
    other = await second.subscribe(ON_EVENT, variables={"g": "two", "ms": 0})
    PublishConcurrency.peak = 0

    def broadcast_all() -> None:
        for seq in range(1000):
            OnEvent.broadcast(group=group, payload={"event": "e", "seq": seq})

    sender = threading.Thread(target=broadcast_all)
    sender.start()
    received = [(await sub.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(1000)]
    sender.join()
    assert received == list(range(1000))
    if mode == "embedded":  # publish ran in this process: its overlap is observable
        assert PublishConcurrency.peak > 1
    await second.assert_no_messages(timeout=0.2)
    await first.assert_no_messages(timeout=0.2)
    await OnEvent.broadcast(group="two", payload={"seq": -1})
    assert (await other.next(timeout=5))["data"]["onEvent"]["seq"] == -1


async def test_skip_and_none_from_publish_suppress_only_that_notification(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "skip"})
    await OnEvent.broadcast(group="skip", payload={"skip": True, "seq": 1})
    await OnEvent.broadcast(group="skip", payload={"none": True, "seq": 2})
    await OnEvent.broadcast(group="skip", payload={"event": "kept", "seq": 3})
    assert await sub.next(timeout=5) == {"data": {"onEvent": {"event": "kept", "seq": 3}}}
    await client.assert_no_messages(timeout=0.2)


async def test_groups_come_from_arguments_and_isolate_chatrooms(
    mode: str,
    client_factory: MakeClient,
) -> None:
    kittens, puppies, sender = [await client_factory() for _ in range(3)]
    kitten_sub = await kittens.subscribe(ON_CHAT, variables={"room": "kittens"})
    puppy_sub = await puppies.subscribe(ON_CHAT, variables={"room": "puppies"})
    await sender.execute(SEND, {"room": "kittens", "text": "meow"})
    assert await kitten_sub.next(timeout=5) == {
        "data": {"onChatMessage": {"chatroom": "kittens", "text": "meow", "sender": "anonymous"}}
    }
    await puppies.assert_no_messages(timeout=0.2)
    assert puppy_sub.id


async def test_no_notification_of_ones_own_messages(mode: str, client_factory: MakeClient) -> None:
    alice, bob = await client_factory(), await client_factory()
    await alice.execute(SET_NAME, {"name": "alice"})
    await bob.execute(SET_NAME, {"name": "bob"})
    alice_sub = await alice.subscribe(ON_CHAT, variables={"room": "r"})
    bob_sub = await bob.subscribe(ON_CHAT, variables={"room": "r"})
    await alice.execute(SEND, {"room": "r", "text": "from alice"})
    assert (await bob_sub.next(timeout=5))["data"]["onChatMessage"]["sender"] == "alice"
    await alice.assert_no_messages(timeout=0.2)
    assert alice_sub.id


async def test_two_subscriptions_on_one_connection_and_complete_ends_only_one(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    first = await client.subscribe(ON_EVENT, variables={"g": "pair"})
    second = await client.subscribe(ON_EVENT, variables={"g": "pair"})
    await OnEvent.broadcast(group="pair", payload={"seq": 1})
    assert (await first.next(timeout=5))["data"]["onEvent"]["seq"] == 1
    assert (await second.next(timeout=5))["data"]["onEvent"]["seq"] == 1
    UNSUBSCRIBED.clear()
    await first.complete()
    await wait_until(lambda: group_subscribers("pair") == 1)
    await OnEvent.broadcast(group="pair", payload={"seq": 2})
    assert (await second.next(timeout=5))["data"]["onEvent"]["seq"] == 2
    await client.assert_no_messages(timeout=0.2)
    if mode == "embedded":  # the callback ran in this process
        assert UNSUBSCRIBED == [("OnEvent", "pair")]


async def test_server_side_unsubscribe_completes_after_earlier_notifications(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "ending", "ms": 3})
    UNSUBSCRIBED.clear()
    for seq in range(20):
        await OnEvent.broadcast(group="ending", payload={"seq": seq})
    await OnEvent.unsubscribe(group="ending")
    received = [item["data"]["onEvent"]["seq"] async for item in sub]
    assert received == list(range(20))  # iteration ends at the server's complete
    await wait_until(lambda: group_subscribers("ending") == 0)
    if mode == "embedded":
        await wait_until(lambda: ("OnEvent", "ending") in UNSUBSCRIBED)


async def test_unsubscribe_from_sync_code_ends_subscriptions_too(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "sync-end"})
    await asyncio.to_thread(OnEvent.unsubscribe, group="sync-end")
    assert [item async for item in sub] == []


async def test_unsubscribed_is_called_on_disconnect(mode: str, client_factory: MakeClient) -> None:
    client = await client_factory()
    await client.subscribe(ON_EVENT, variables={"g": "bye"})
    UNSUBSCRIBED.clear()
    assert group_subscribers("bye") == 1
    await client.finalize()
    await wait_until(lambda: group_subscribers("bye") == 0)
    if mode == "embedded":
        await wait_until(lambda: ("OnEvent", "bye") in UNSUBSCRIBED)


async def test_after_confirmation_a_mutations_notification_always_arrives(
    mode: str,
    client_factory: MakeClient,
) -> None:
    listener, sender = await client_factory(), await client_factory()
    for attempt in range(20):
        room = f"race-{attempt}"
        sub = await listener.subscribe(ON_CHAT, variables={"room": room})  # waits for confirmation
        await listener.execute(SEND, {"room": room, "text": str(attempt)})
        assert (await sub.next(timeout=5))["data"]["onChatMessage"]["text"] == str(attempt)
        await sub.complete()
    assert sender.connected


async def test_without_confirmation_no_message_precedes_the_first_notification(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory("subscriptions/")
    sub = await client.subscribe(ON_EVENT, variables={"g": "noconfirm"}, wait_confirmation=False)
    await wait_until(lambda: group_subscribers("noconfirm") == 1)
    await OnEvent.broadcast(group="noconfirm", payload={"seq": 5})
    assert await sub.next(timeout=5) == {"data": {"onEvent": {"event": None, "seq": 5}}}


async def test_what_a_client_sends_after_a_subscribe_is_answered_once_the_subscription_is_live(
    mode: str,
    client_factory: MakeClient,
) -> None:
    # Without confirmations, clients of the reference library make a round
    # trip after subscribing; its answer must mean the subscription is live,
    # however long ``subscribe`` takes (a worker's round trip in distributed mode).
    client = await client_factory("subscriptions/")
    group = f"after-{uuid.uuid4().hex[:8]}"
    slow = "subscription($g: String) { onEvent(group: $g, subscribeMs: 400) { seq } }"
    sub = await client.subscribe(slow, variables={"g": group}, wait_confirmation=False)
    started = time.monotonic()
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}
    assert time.monotonic() - started >= 0.3  # it waited for the subscription
    assert group_subscribers(group) == 1
    await OnEvent.broadcast(group=group, payload={"seq": 1})
    assert await sub.next(timeout=10) == {"data": {"onEvent": {"seq": 1}}}
    # Later operations do not wait once nothing is activating.
    started = time.monotonic()
    await client.execute("{ hello }")
    assert time.monotonic() - started < 0.3


async def test_a_mutation_sent_right_after_a_subscribe_is_notified_to_it(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory("subscriptions/")
    room = f"own-{uuid.uuid4().hex[:8]}"
    slow = (
        "subscription($room: String!) { onChatMessage(chatroom: $room, subscribeMs: 400) { text } }"
    )
    sub = await client.subscribe(slow, variables={"room": room}, wait_confirmation=False)
    assert await client.execute(SEND, {"room": room, "text": "first"}) == {
        "data": {"sendChatMessage": {"ok": True}}
    }
    assert await sub.next(timeout=10) == {"data": {"onChatMessage": {"text": "first"}}}


async def test_the_confirmation_message_is_configurable(
    client_factory: MakeClient, subprotocol: str
) -> None:
    from tests.asgi import application

    transport = gqlws.testing.GraphqlWsTransport(
        application, "subscriptions-confirm/", subprotocols=[subprotocol]
    )
    client = gqlws.testing.GraphqlWsClient(transport)
    await client.connect_and_init()
    op_id = await client.start(ON_EVENT, variables={"g": "c"})
    message = await client.receive(wait_id=op_id, raw_response=True)
    assert message["payload"] == {"data": None, "errors": None}
    await client.finalize()


async def test_django_model_payloads_round_trip(mode: str, client_factory: MakeClient) -> None:
    client = await client_factory()
    query = 'subscription { onEvent(group: "models") { userName } }'
    sub = await client.subscribe(query)
    user = User(pk=7, username="ann")
    await OnEvent.broadcast(group="models", payload={"user": user})
    assert await sub.next(timeout=5) == {"data": {"onEvent": {"userName": "ann#7"}}}


async def test_an_unserializable_payload_raises_an_error_naming_it() -> None:
    with pytest.raises(TypeError, match="object"):
        OnEvent.broadcast_sync(group="x", payload={"bad": object()})


async def test_broadcasts_from_a_thread_a_sync_view_and_a_coroutine_all_arrive(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "sources"})
    await asyncio.to_thread(OnEvent.broadcast, group="sources", payload={"event": "thread"})
    await sub.next(timeout=5)
    response = await sync_to_async(Client().post)(
        "/notify/",
        data={"group": "sources", "payload": {"event": "view"}},
        content_type="application/json",
    )
    assert response.status_code == 200
    await OnEvent.broadcast(group="sources", payload={"event": "coroutine"})
    assert (await sub.next(timeout=5))["data"]["onEvent"]["event"] == "view"
    assert (await sub.next(timeout=5))["data"]["onEvent"]["event"] == "coroutine"


async def test_a_failing_subscribe_answers_an_error(mode: str, client_factory: MakeClient) -> None:
    client = await client_factory()
    with pytest.raises(gqlws.GraphqlWsResponseError, match="Not allowed to subscribe"):
        await client.subscribe("subscription { forbidden { value } }")
    with pytest.raises(gqlws.GraphqlWsResponseError, match="not a gqlws Subscription"):
        await client.subscribe("subscription { notGqlws }")
    assert await client.execute("{ hello }") == {"data": {"hello": "Hello, world!"}}


@pytest.fixture
def slow_gate() -> Any:
    gate = asyncio.Event()
    gate.set()
    SlowSocketConsumer.gate = gate
    SlowSocketConsumer.deliveries = 0
    SlowSocketConsumer.stuck = 0
    yield gate
    gate.set()
    SlowSocketConsumer.gate = None


async def test_a_slow_client_is_closed_with_1013_when_its_queue_overflows(
    client_factory: MakeClient, slow_gate: asyncio.Event
) -> None:
    client = await client_factory("subscriptions-slow/")
    sub = await client.subscribe(ON_EVENT, variables={"g": "slow"})
    slow_gate.clear()  # the socket stops writing
    await OnEvent.broadcast(group="slow", payload={"seq": 0})
    await wait_until(lambda: SlowSocketConsumer.stuck == 1)  # the socket holds frame 0
    for seq in range(1, 20):
        await OnEvent.broadcast(group="slow", payload={"seq": seq})
    await wait_until(lambda: SlowSocketConsumer.deliveries == 20)
    slow_gate.set()
    received = []
    with pytest.raises(GraphqlWsConnectionClosed) as closed:
        while True:
            received.append((await sub.next(timeout=5))["data"]["onEvent"]["seq"])
    assert closed.value.code == 1013
    assert received == [0]  # the frame the socket was stuck on; the queue was dropped


async def test_drop_oldest_keeps_the_newest_notifications(
    client_factory: MakeClient, slow_gate: asyncio.Event
) -> None:
    client = await client_factory("subscriptions-dropping/")
    sub = await client.subscribe(ON_EVENT, variables={"g": "dropping"})
    slow_gate.clear()
    await OnEvent.broadcast(group="dropping", payload={"seq": 0})
    await wait_until(lambda: SlowSocketConsumer.stuck == 1)  # the socket holds frame 0
    for seq in range(1, 20):
        await OnEvent.broadcast(group="dropping", payload={"seq": seq})
    await wait_until(lambda: SlowSocketConsumer.deliveries == 20)
    slow_gate.set()
    received = [(await sub.next(timeout=5))["data"]["onEvent"]["seq"] for _ in range(6)]
    # The frame stuck in the socket, then the 5 newest (the queue's limit).
    assert received == [0, 15, 16, 17, 18, 19]
    await client.assert_no_messages(timeout=0.2)


async def test_chat_over_daphne_with_the_aiohttp_client(
    daphne_server: ServerProcess, subprotocol: str
) -> None:
    url = f"ws://127.0.0.1:{daphne_server.port}/subscriptions-confirm/"
    alice, bob = (
        gqlws.GraphqlWsClient(gqlws.GraphqlWsTransportAiohttp(url, subprotocols=[subprotocol]))
        for _ in range(2)
    )
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            await client.connect_and_init()
            await client.execute(SET_NAME, {"name": name})
        alice_sub = await alice.subscribe(ON_CHAT, variables={"room": "daphne"})
        bob_sub = await bob.subscribe(ON_CHAT, variables={"room": "daphne"})
        await alice.execute(SEND, {"room": "daphne", "text": "hi bob"})
        bob_send = 'mutation { sendChatMessageAsync(chatroom: "daphne", text: "hi") { ok } }'
        await bob.execute(bob_send)
        assert await bob_sub.next(timeout=10) == {
            "data": {"onChatMessage": {"chatroom": "daphne", "text": "hi bob", "sender": "alice"}}
        }
        assert (await alice_sub.next(timeout=10))["data"]["onChatMessage"]["sender"] == "bob"
        await alice_sub.complete()
        await alice.execute(SEND, {"room": "daphne", "text": "still there?"})
        assert (await bob_sub.next(timeout=10))["data"]["onChatMessage"]["text"] == "still there?"
    finally:
        await alice.finalize()
        await bob.finalize()


async def test_broadcast_delay_returns_the_issued_event_even_in_async_code(
    mode: str,
    client_factory: MakeClient,
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "delayed"})
    first = OnEvent.broadcast.delay(group="delayed", payload={"seq": 1})
    second = OnEvent.broadcast.delay(group="delayed", payload={"seq": 2})
    assert second.offset == first.offset + 1
    assert second.group == first.group == OnEvent._group_name("delayed")
    assert [(await sub.next(timeout=5))["data"]["onEvent"]["seq"] for _ in range(2)] == [1, 2]


async def test_broadcast_delay_on_commit_sends_only_what_commits(
    mode: str,
    client_factory: MakeClient,
) -> None:
    from django.db import transaction

    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "tx"})

    def view(commit: bool, seq: int) -> None:
        try:
            with transaction.atomic():
                OnEvent.broadcast.delay_on_commit(group="tx", payload={"seq": seq})
                if not commit:
                    raise RuntimeError("roll back")
        except RuntimeError:
            pass

    await sync_to_async(view)(False, 1)
    await sync_to_async(view)(True, 2)
    assert (await sub.next(timeout=5))["data"]["onEvent"]["seq"] == 2
    await client.assert_no_messages(timeout=0.2)


async def test_gqlws_broadcast_delay_takes_a_subscription_class_or_its_path(
    mode: str, client_factory: MakeClient
) -> None:
    client = await client_factory()
    sub = await client.subscribe(ON_EVENT, variables={"g": "by-path"})
    gqlws.broadcast.delay("tests.subscription_schema.OnEvent", group="by-path", payload={"seq": 1})
    gqlws.broadcast.delay(OnEvent, group="by-path", payload={"seq": 2})
    assert [(await sub.next(timeout=10))["data"]["onEvent"]["seq"] for _ in range(2)] == [1, 2]
    with pytest.raises(TypeError, match="gqlws Subscription"):
        gqlws.broadcast.delay("tests.schema.Query", group="x")


async def test_a_client_resubscribing_with_its_last_positions_gets_what_it_missed(
    mode: str, client_factory: MakeClient
) -> None:
    group = f"resume-{mode}-{time.monotonic_ns()}"
    first = await client_factory()
    sub = await first.subscribe(ON_EVENT, variables={"g": group})
    for seq in range(3):
        await OnEvent.broadcast(group=group, payload={"seq": seq})
    assert [(await sub.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(3)] == [0, 1, 2]
    assert [p["offset"] for p in sub.positions] == [3]
    await first.finalize()  # the connection is lost
    await wait_until(lambda: group_subscribers(group) == 0)
    for seq in range(3, 8):
        await OnEvent.broadcast(group=group, payload={"seq": seq})

    second = await client_factory()
    resumed = await second.subscribe(ON_EVENT, variables={"g": group}, resume=sub)
    await OnEvent.broadcast(group=group, payload={"seq": 8})
    received = [(await resumed.next(timeout=30))["data"]["onEvent"]["seq"] for _ in range(6)]
    assert received == [3, 4, 5, 6, 7, 8]  # the missed ones first, in order, then new ones
    await second.assert_no_messages(timeout=0.3)


async def test_resuming_from_another_epoch_ends_with_a_resync_error(
    mode: str, client_factory: MakeClient
) -> None:
    group = f"stale-{mode}-{time.monotonic_ns()}"
    await OnEvent.broadcast(group=group, payload={"seq": 0})
    client = await client_factory()
    stale = [{"group": OnEvent._group_name(group), "epoch": "gone", "offset": 0}]
    with pytest.raises(gqlws.GraphqlWsResponseError) as error:
        sub = await client.subscribe(ON_EVENT, variables={"g": group}, resume=stale)
        await sub.next(timeout=10)
    assert "RESYNC" in str(error.value)


async def test_a_per_user_cohort_renders_once_per_user_and_each_gets_its_own(
    mode: str, client_factory: MakeClient
) -> None:
    from tests.subscription_schema import PerUserNews

    query = "subscription { perUserNews { text } }"
    subs = []
    for name in ("alice", "alice", "bob"):
        client = await client_factory()
        await client.execute(SET_NAME, {"name": name})
        subs.append(await client.subscribe(query))
    PerUserNews.calls = 0
    await PerUserNews.broadcast(payload={"text": "news"})
    texts = [(await sub.next(timeout=10))["data"]["perUserNews"]["text"] for sub in subs]
    assert texts == ["news for alice", "news for alice", "news for bob"]
    if mode == "embedded":  # publish ran in this process: count its calls
        assert PerUserNews.calls == 2
