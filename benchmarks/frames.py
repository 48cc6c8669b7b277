"""The frames the benchmarks exchange, shared by the load generator and the bare app.

Both sides must agree on three things, kept here once:

* the **GraphQL documents** of the example chat (``example/schema.py``): a
  small query on a room nobody writes to, the ``onNewChatMessage``
  subscription and the ``sendChatMessage`` mutation that broadcasts;
* the **framing** of each subprotocol: which message type begins an
  operation, carries a result and cancels one (``graphql-transport-ws``:
  ``subscribe`` / ``next`` / ``complete``; legacy ``graphql-ws``: ``start`` /
  ``data`` / ``stop``);
* the **stamp** carried by each broadcast's chat text, ``"<seq> <time.time()>"``:
  the receiver reads the sequence number (for lost, duplicated and
  out-of-order counts) and the send time (for the end-to-end latency) out of
  an ordinary chat message, so the library is measured as users run it,
  with nothing added to it. Warm-up broadcasts carry ``"w<k>"`` instead.
"""

from __future__ import annotations

__all__ = [
    "BEGIN",
    "CANCEL",
    "GRAPHQL_WS",
    "PROTOCOLS",
    "QUERIES",
    "QUERY",
    "QUERY_ROOM",
    "RESULT",
    "SEND",
    "SUBSCRIBE",
    "SUBSCRIPTIONS",
    "SUBSCRIPTION_ID",
    "TRANSPORT_WS",
    "parse_stamp",
    "stamp",
    "warmup_text",
]

TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, GRAPHQL_WS)

#: Per subprotocol, the message type that begins an operation.
BEGIN = {TRANSPORT_WS: "subscribe", GRAPHQL_WS: "start"}
#: Per subprotocol, the message type of one result.
RESULT = {TRANSPORT_WS: "next", GRAPHQL_WS: "data"}
#: Per subprotocol, the message type a client sends to cancel an operation.
CANCEL = {TRANSPORT_WS: "complete", GRAPHQL_WS: "stop"}

#: Nothing is ever sent to this room, so the query's answer stays tiny.
QUERY_ROOM = "bench-empty"
QUERY = '{ history(chatroom: "bench-empty") { text } }'
#: The query round trips measured, by name: the document and the field its
#: result must hold. ``history`` reads the database (sqlite here, Django's
#: ORM) in a sync resolver, in the thread pool; ``me`` does not (an async
#: resolver, run on the event loop), so it shows what gqlws itself costs per
#: round trip.
QUERIES = {
    "history": (QUERY, "history"),
    "me": ("{ me }", "me"),
}
SUBSCRIBE = "subscription($r: String!) { onNewChatMessage(chatroom: $r) { text } }"
#: The subscriptions the fan-out measures, by name: the document and its field.
#: ``chat`` (``onNewChatMessage``) runs ``publish`` per subscriber (it hides
#: one's own messages); ``feed`` (``onChatFeed``) is a cohort: one ``publish``,
#: one rendering and one encoding per broadcast, whatever the subscribers.
SUBSCRIPTIONS = {
    "chat": (SUBSCRIBE, "onNewChatMessage"),
    "feed": ("subscription($r: String!) { onChatFeed(chatroom: $r) { text } }", "onChatFeed"),
}
SEND = "mutation($r: String!, $t: String!) { sendChatMessage(chatroom: $r, text: $t) { ok } }"

#: Every subscriber holds one subscription, under this operation id.
SUBSCRIPTION_ID = "s"


def stamp(seq: int, sent: float) -> str:
    """The chat text of broadcast number ``seq`` sent at ``sent`` (``time.time()``)."""
    return f"{seq} {sent:.6f}"


def warmup_text(index: int) -> str:
    """The chat text of warm-up broadcast ``index`` (not counted)."""
    return f"w{index}"


def parse_stamp(text: str) -> tuple[int, float] | None:
    """``(seq, sent)`` out of a stamped text; None for a warm-up text.

    Raises ``ValueError`` for anything else: a text the benchmark did not
    send is an error to report, not a message to skip.
    """
    if text.startswith("w"):
        return None
    seq, sent = text.split(" ")
    return int(seq), float(sent)
