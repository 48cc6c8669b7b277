"""``GraphqlWsConsumer``: the Channels consumer that serves GraphQL over WebSocket.

A thin adapter. Frames go into the connection's protocol session
(``gqlws.protocol``), whose actions come back out here: frames to send, a
close, a connection to authorise, operations to start or stop. Operations
run as tasks, never awaited from the socket's read loop, so a slow resolver
never delays a ``ping``, a ``complete`` or another request. Every outgoing
frame goes through the connection's ``Outbox``, in order.

Subscribe it and set ``schema``; the other class attributes are the
settings of django-channels-graphql-ws, with the same meaning::

    class MyGraphqlWsConsumer(gqlws.GraphqlWsConsumer):
        schema = graphql_schema
        send_keepalive_every = 42       # seconds; None: no keepalive
        strict_ordering = False         # True: one request at a time, in order
        confirm_subscriptions = False   # True: a first message once subscribed
        max_worker_threads = None       # threads running resolvers
        middleware = [my_middleware]    # or a graphql MiddlewareManager

        async def on_connect(self, payload):
            ...  # raise to reject the connection
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from asgiref.sync import markcoroutinefunction
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from graphql import OperationType, ValidationRule

from . import drain, logs, metrics, protocol, runtime
from .context import OperationContext
from .daphne_compat import patch_daphne
from .edge import Edge
from .execution import DocumentCache, InvalidDocument, document_cache, graphql_schema
from .executors import CeleryExecutor, EmbeddedExecutor, Executor
from .keepalive import Keepalives
from .limits import TokenBucket, depth_and_complexity_rule
from .operation import Operation, TaskGroup
from .outbox import Disconnected, Outbox, OverflowPolicy
from .pool import executor_for
from .subscriptions import SubscriptionsMixin
from .uvicorn_compat import patch_uvicorn

__all__ = ["GraphqlWsConsumer"]

LOG = logging.getLogger(__name__)

#: RFC 6455 caps a close reason at 123 bytes of UTF-8.
_MAX_CLOSE_REASON = 123


patch_daphne()  # close codes 1008/1009/1012/1013 and reasons under Daphne
patch_uvicorn()  # handshake headers let go of once open, under uvicorn

#: One rule class per limits pair, so that document caches are shared by key.
_limit_rule = functools.lru_cache(maxsize=None)(depth_and_complexity_rule)


def _gone_errors() -> tuple[type[BaseException], ...]:
    """What ASGI servers raise on a send to a socket the client already closed."""
    found: list[type[BaseException]] = [OSError]  # uvicorn: ClientDisconnected(OSError)
    try:
        from autobahn.exception import Disconnected as AutobahnDisconnected  # Daphne
    except ImportError:
        pass
    else:
        found.append(AutobahnDisconnected)
    return tuple(found)


_GONE = _gone_errors()

#: Stateless: shared by every connection of an embedded edge.
_EMBEDDED = EmbeddedExecutor()


def _frame_sender(send: Any) -> Any:
    """The ASGI ``send`` a WebSocket text frame can go straight to.

    Channels' ``SessionMiddleware`` wraps ``send`` to save the session when
    an HTTP response starts; a WebSocket frame passes through it untouched,
    after a few attribute and session lookups, on every notification. Such
    wrappers are skipped (only while they save on no WebSocket message
    type); any other wrapper is kept.
    """
    while (
        getattr(send, "__func__", None) is InstanceSessionWrapper.send
        and "websocket.send" not in send.__self__.save_message_types
    ):
        send = send.__self__.real_send
    return send


def _close_reason(reason: str) -> str:
    return reason.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


class GraphqlWsConsumer(SubscriptionsMixin, AsyncWebsocketConsumer):
    """Channels WebSocket consumer which provides the GraphQL API."""

    #: The Graphene (or graphql-core) schema this consumer serves.
    schema: ClassVar[Any] = None
    #: Seconds between keepalive frames (``ka`` / ``ping``); None disables them.
    send_keepalive_every: ClassVar[float | None] = None
    #: Process one request at a time, in the order they arrived.
    strict_ordering: ClassVar[bool] = False
    #: Send ``subscription_confirmation_message`` once a subscription is active.
    confirm_subscriptions: ClassVar[bool] = False
    #: The confirmation sent as the first result of an activated subscription.
    subscription_confirmation_message: ClassVar[dict[str, Any]] = {"data": None, "errors": None}
    #: Threads running user code (resolvers, subscribe, publish) for this class.
    max_worker_threads: ClassVar[int | None] = None
    #: GraphQL middleware: a list of functions/objects or a MiddlewareManager.
    middleware: ClassVar[Any] = None
    #: Seconds a client has to send ``connection_init`` before being closed (4408).
    connection_init_wait_timeout: ClassVar[float] = 3.0
    #: Notifications a connection may have queued before the overflow policy applies.
    notification_queue_limit: ClassVar[int] = 1024
    #: On overflow: "close" (1013, the client resumes) or "drop_oldest" (the reference's).
    notification_queue_overflow: ClassVar[OverflowPolicy] = "close"
    #: Largest frame accepted, in bytes (bigger: close 1009); None: no limit.
    max_message_size: ClassVar[int | None] = 1 << 20
    #: Operations (running requests and live subscriptions) one connection may hold.
    max_operations: ClassVar[int | None] = 200
    #: Messages per second a connection may send on average (more: close 1008).
    rate_limit: ClassVar[float | None] = 500.0
    #: ... in bursts of up to this many messages.
    rate_limit_burst: ClassVar[int] = 1000
    #: Deepest selection nesting an operation may have; None: no limit.
    max_query_depth: ClassVar[int | None] = None
    #: Most fields an operation may select (fragments expanded); None: no limit.
    max_query_complexity: ClassVar[int | None] = None

    # ---- Hooks for subclasses ---------------------------------------------

    async def on_connect(self, payload: Any) -> Any:
        """Called with the ``connection_init`` payload; raise to reject the client.

        Returning a dict makes it the ``connection_ack`` payload.
        """

    async def on_operation(self, op_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Called before an operation runs; may return a modified payload."""
        return payload

    # ---- ASGI dispatch ----------------------------------------------------

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """Channels' ``as_asgi``, with one coroutine less held per connection.

        Channels' application is an ``async def`` that awaits the consumer:
        its frame stays suspended for as long as the socket is open (~0.25
        KiB each). This one hands the consumer's own coroutine to the router
        to await. It is marked as a coroutine function, so that asgiref
        (Daphne, the test communicators) still sees an ASGI 3 application.
        """

        def app(scope: Any, receive: Any, send: Any) -> Coroutine[Any, Any, None]:
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())  # name and docstring, as Channels'
        return markcoroutinefunction(app)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: protocol.ProtocolSession | None = None
        self._operations: dict[str, Operation] = {}
        self._tasks = TaskGroup(LOG)
        self._closed = False
        #: The id of this connection in log records (``gqlws.logs``).
        self.connection_id = logs.new_connection_id()
        self._edge_id: str | None = None  # of the edge holding it, for ``_log``
        self._accepted_at = time.monotonic()
        self._serial: asyncio.Queue[tuple[Operation, dict[str, Any]]] | None = None
        #: The subprotocol label of this connection in the metrics, once accepted.
        self._metrics_label: str | None = None
        self._bucket = (
            TokenBucket(self.rate_limit, self.rate_limit_burst, time.monotonic())
            if self.rate_limit
            else None
        )
        #: Tasks ending subscriptions; the disconnect waits for them. None
        #: while there is none (an empty set is ~0.2 KiB per idle connection).
        self._ending: set[asyncio.Task[Any]] | None = None
        #: Where this connection's keepalives tick, once acknowledged (``gqlws.keepalive``).
        self._keepalives: Keepalives | None = None
        self._init_timer: asyncio.TimerHandle | None = None
        #: ``settled`` futures of operations not yet settled (``_start``).
        self._unsettled: set[asyncio.Future[None]] | None = None
        self._frame_send: Any = None  # the ASGI send frames go to (``_send_text``)
        settings = runtime.settings()
        self._runner: Executor = (
            CeleryExecutor(settings.OPERATION_TIMEOUT) if settings.distributed else _EMBEDDED
        )
        self._outbox = Outbox(
            self._send_text,
            self._send_close,
            limit=self.notification_queue_limit,
            policy=self.notification_queue_overflow,
            spawn=self._spawn_sender,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Channels' loop (``await_many_dispatch``) wraps each receive in a
        # new task and an ``asyncio.wait``, to listen to a channel layer as
        # well. gqlws needs none: without one, a plain loop does the same
        # (a task and a wait less per frame, ~3 KiB less per connection).
        try:
            if get_channel_layer(self.channel_layer_alias) is not None:
                await super().__call__(scope, receive, send)
                return
            self.scope = scope
            self.channel_layer = None
            self.base_send = send
            try:
                while True:
                    await self.dispatch(await receive())
                    # A receive from a non-empty queue does not yield: without
                    # this, a client's burst of frames would hold the loop until
                    # it is all read, and tasks its frames started (on_connect)
                    # would run after all of them, as Channels' loop never did.
                    await asyncio.sleep(0)
            except StopConsumer:
                pass
        finally:
            # Normally done by the disconnect; also when the server cancelled
            # this coroutine or a disconnect failed: the drain's set and the
            # keepalives hold their connections strongly.
            drain.untrack(self)
            self._stop_keepalives()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch also closes stale DB connections on the loop for
        # every frame (a thread hop each); gqlws does that in the threads that
        # use the database instead. Any exception is contained here: reaching
        # the ASGI server it would become a 1011 close.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            LOG.warning("No handler for ASGI message type %r", message["type"])
            return
        try:
            await handler(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception:
            LOG.exception("Unexpected error while handling %r", message["type"])
            self._close(protocol.CloseCode.INTERNAL_SERVER_ERROR, "Internal server error")

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        settings = runtime.settings()
        patch_daphne(settings.MAX_SEND_BUFFER)  # in case Daphne was loaded after this module
        patch_uvicorn()
        drain.install(settings.DRAIN_GRACE)
        session = protocol.negotiate(self.scope.get("subprotocols") or [])
        self._outbox.start()
        self._metrics_label = metrics.connection_opened(session.subprotocol if session else None)
        # The edge joins the fabric with its first connection, not its first
        # subscription: status lists it, records carry its id. (Not while
        # draining: a drained edge has left the fabric for good.)
        loop = asyncio.get_running_loop()
        edge = Edge.of_loop(loop) if drain.draining() else Edge.current()
        self._edge_id = None if edge is None else edge.edge_id
        if drain.draining():
            await self.accept(session.subprotocol if session else None)
            self._close(protocol.CloseCode.SERVICE_RESTART, "Server restarting: reconnect")
            self._log.rejected(protocol.CloseCode.SERVICE_RESTART, "draining")
            return
        drain.track(self)
        if session is None:
            # Accept, explain, then close: a refused handshake would only tell
            # the client "403". The reason also goes out as one text frame, for
            # tools that show frames but not close reasons.
            offered = ", ".join(self.scope.get("subprotocols") or []) or "none"
            reason = (
                f"Subprotocol not acceptable: offered {offered}; "
                f"expected {' or '.join(protocol.SUPPORTED_SUBPROTOCOLS)}"
            )
            await self.accept()
            self._outbox.reply(protocol.encode({"type": "error", "payload": {"message": reason}}))
            self._close(protocol.CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, reason)
            self._log.rejected(
                protocol.CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE,
                "no common subprotocol",
                offered=list(self.scope.get("subprotocols") or []),
            )
            return
        self._session = session
        await self.accept(session.subprotocol)
        self._log.connected(session.subprotocol, self.scope.get("path"))
        # A timer, not a sleeping task: cheaper, and cancelled once it is moot.
        self._init_timer = loop.call_later(self.connection_init_wait_timeout, self._init_timed_out)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._session is None or self._closed:
            return
        text, data = message.get("text"), message.get("bytes")
        if self._over_limits(text, data):
            return
        self._apply(self._session.receive(text, data))

    def _over_limits(self, text: str | None, data: bytes | None) -> bool:
        """Apply the size and rate limits to one frame; True if it was refused."""
        limit = self.max_message_size
        if limit is not None:
            # Characters never outnumber UTF-8 bytes: encode only when it could matter.
            size = len(data) if data is not None else len(text or "")
            if text is not None and size * 4 > limit:
                size = len(text.encode("utf-8", "surrogatepass"))
            if size > limit:
                reason = f"Message too big: {size} bytes, the limit is {limit}"
                self._close(protocol.CloseCode.MESSAGE_TOO_BIG, reason)
                return True
        if self._bucket is not None and not self._bucket.take(time.monotonic()):
            LOG.warning("Closing a connection over its rate limit")
            self._close(protocol.CloseCode.POLICY_VIOLATION, "Rate limit exceeded")
            return True
        return False

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        self._stop_keepalives()
        if self._init_timer is not None:
            self._init_timer.cancel()
        metrics.connection_closed(self._metrics_label, self._outbox.close_code, message.get("code"))
        ours = self._outbox.close_code  # None: the client closed (or the socket broke)
        self._log.closed(
            message.get("code") if ours is None else ours,
            "client" if ours is None else "server",
            time.monotonic() - self._accepted_at,
        )
        operations = list(self._operations.values())
        self._operations.clear()
        for operation in operations:
            operation.cancel()
        self._end_later(operations, "unsubscribe on disconnect")
        # Ends already under way (a stop, a server-side unsubscribe) finish
        # too: cancelled, they would skip their ``unsubscribed`` callback.
        await asyncio.gather(*(self._ending or ()), return_exceptions=True)
        await self._tasks.cancel_all()
        drain.untrack(self)
        raise StopConsumer()

    async def drain(self, grace: float) -> None:
        """Let running queries and mutations finish (up to ``grace`` s), then close with 1012."""
        running = [
            op.task
            for op in self._operations.values()
            if op.subscription is None and op.task is not None and not op.task.done()
        ]
        if running:
            await asyncio.wait(running, timeout=grace)
        self._close(protocol.CloseCode.SERVICE_RESTART, "Server restarting: reconnect and resume")
        # Until the close frame is out: the server stops right after the drain.
        await self._outbox.flushed(timeout=2.0)

    @property
    def _log(self) -> logs.ConnectionLogger:
        # Made for each record rather than held: records are few (connect,
        # close, failures), idle connections many (an adapter and its dict
        # are ~0.3 KiB each).
        return logs.ConnectionLogger(LOG, self.connection_id, edge_id=self._edge_id)

    # ---- Sending ------------------------------------------------------------

    async def _send_text(self, text: str) -> None:
        # Every frame and every notification takes this path: straight to
        # the ASGI send, past the consumer's own ``send`` wrappers and the
        # session middleware's, which do nothing for a WebSocket frame.
        send = self._frame_send
        if send is None:
            send = self._frame_send = _frame_sender(self.base_send)
        try:
            await send({"type": "websocket.send", "text": text})
        except _GONE as error:
            raise Disconnected from error

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self.close(code=code, reason=_close_reason(reason))
        except _GONE as error:
            raise Disconnected from error

    def _apply(self, actions: list[protocol.Action]) -> None:
        for action in actions:
            if isinstance(action, protocol.Send):
                self._outbox.reply(protocol.encode(action.message))
            elif isinstance(action, protocol.Close):
                self._close(action.code, action.reason)
            elif isinstance(action, protocol.Authorize):
                self._spawn(self._authorize(action.payload), "on-connect")
            elif isinstance(action, protocol.Start):
                self._start(action.op_id, dict(action.payload))
            elif isinstance(action, protocol.Stop):
                self._stop(action.op_id)

    def _emit(self, operation: Operation, actions: list[protocol.Action]) -> None:
        """Apply actions for ``operation`` unless it was stopped or its id reused."""
        if self._operations.get(operation.op_id) is operation:
            self._apply(actions)

    def _close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued; stop every operation."""
        if self._closed:
            return
        self._closed = True
        self._stop_keepalives()
        if self._session is not None:
            self._session.close(code, reason)  # the session forgets its operations
        self._outbox.close(int(code), reason)
        # Running work stops now; subscriptions stay in the table until the
        # disconnect that follows ends them (unregister, ``unsubscribed``).
        for operation in self._operations.values():
            operation.cancel()

    # ---- Background tasks ---------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A background task of this connection; a failure in it closes with 4500."""
        return self._tasks.spawn(self._guarded(coro), name=name)

    def _spawn_sender(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._spawn(coro, "outbox")

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            # User errors were already turned into GraphQL errors or a
            # rejection; what arrives here is a bug, ours or a hook's return
            # value we cannot send. The client must not wait forever for it.
            LOG.exception("Unexpected error in a connection task")
            self._close(protocol.CloseCode.INTERNAL_SERVER_ERROR, "Internal server error")

    # ---- Connection handshake ---------------------------------------------

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if self._session is not None and not self._closed:
            self._apply(self._session.init_timeout())

    async def _authorize(self, payload: Any) -> None:
        assert self._session is not None
        if self._init_timer is not None:  # connection_init came in time
            self._init_timer.cancel()
            self._init_timer = None
        try:
            ack_payload = await self.on_connect(payload)
        except Exception as error:
            # The message may quote the payload (a token): only with LOG_PAYLOADS.
            detail: dict[str, Any] = {"detail": str(error)} if logs.payloads_logged() else {}
            self._log.rejected(
                protocol.CloseCode.FORBIDDEN,
                "on_connect",
                error_type=type(error).__name__,
                **detail,
            )
            self._apply(self._session.reject_connection(str(error) or type(error).__name__))
            return
        if ack_payload is not None and not isinstance(ack_payload, dict):
            ack_payload = None
        if ack_payload is not None:
            protocol.encode(ack_payload)  # fail here, in this task, if it cannot be sent
        self._apply(self._session.accept_connection(ack_payload))
        if self.send_keepalive_every:
            # The legacy protocol's server sends a first ka right after the ack.
            if self._session.subprotocol == protocol.GRAPHQL_WS:
                self._apply(self._session.keepalive())
            if not self._closed:
                # Not a task sleeping in a loop (a coroutine's frames, ~1.5
                # KiB), nor a timer of its own (~0.3 KiB): an entry in the
                # loop's keepalives for this interval.
                self._keepalives = Keepalives.of(self.send_keepalive_every)
                self._keepalives.add(self)

    def _send_keepalive(self) -> None:
        """Called by ``Keepalives`` every ``send_keepalive_every`` seconds."""
        if self._closed or self._session is None:
            self._stop_keepalives()
            return
        self._apply(self._session.keepalive())

    def _stop_keepalives(self) -> None:
        keepalives, self._keepalives = self._keepalives, None
        if keepalives is not None:
            keepalives.discard(self)

    # ---- Operations -------------------------------------------------------

    def _start(self, op_id: str, payload: dict[str, Any]) -> None:
        if self.max_operations is not None and len(self._operations) >= self.max_operations:
            assert self._session is not None
            message = f"Too many operations on this connection (the limit is {self.max_operations})"
            self._log.operation_failed(op_id, "too many operations", [{"message": message}])
            self._apply(self._session.error(op_id, [{"message": message}]))
            return
        operation = Operation(op_id)
        self._operations[op_id] = operation
        # Ordered after the subscriptions sent before it: once a client has
        # the answer to anything it sent after a subscribe, that
        # subscription is live (the round trip the reference library's
        # clients rely on), and its own mutations reach it.
        if self._unsettled is None:
            self._unsettled = set()
        else:
            operation.after = list(self._unsettled)
        operation.settled = asyncio.get_running_loop().create_future()
        self._unsettled.add(operation.settled)
        if self.strict_ordering:
            if self._serial is None:
                self._serial = asyncio.Queue()
                self._spawn(self._run_serially(self._serial), "strict-ordering")
            self._serial.put_nowait((operation, payload))
        else:
            self._run_in_task(operation, payload)

    def _stop(self, op_id: str) -> None:
        operation = self._operations.pop(op_id, None)
        if operation is None:
            return
        operation.cancel()
        self._end_later([operation], f"unsubscribe {op_id}")

    def _end_later(self, operations: list[Operation], name: str) -> None:
        """End the subscriptions among ``operations`` in a task the disconnect waits for."""
        if any(operation.subscription is not None for operation in operations):
            task = self._spawn(self._end_subscriptions(operations), name)
            if self._ending is None:
                self._ending = set()
            self._ending.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._ending is not None:
            self._ending.discard(task)
            if not self._ending:
                self._ending = None

    async def _run_serially(self, queue: asyncio.Queue[tuple[Operation, dict[str, Any]]]) -> None:
        # Each operation still gets a task of its own, so that stopping one
        # cancels that task and not this loop.
        while True:
            operation, payload = await queue.get()
            if not operation.active:
                self._settle(operation)
                continue
            await asyncio.wait([self._run_in_task(operation, payload)])

    def _run_in_task(self, operation: Operation, payload: dict[str, Any]) -> asyncio.Task[Any]:
        task = operation.task = self._spawn(
            self._run(operation, payload), f"operation {operation.op_id}"
        )
        task.add_done_callback(lambda _: self._ran(operation))
        return task

    def _ran(self, operation: Operation) -> None:
        # Settled however the task ends, even cancelled before it started. A
        # live subscription outlives its task: it keeps no finished task.
        operation.task = None
        self._settle(operation)

    def _settle(self, operation: Operation) -> None:
        """``operation`` is no subscription still activating: later ones may go on."""
        settled = operation.settled
        if settled is not None:
            operation.settled = None
            settled.set_result(None)
            if self._unsettled is not None:
                self._unsettled.discard(settled)
                if not self._unsettled:
                    self._unsettled = None  # nothing to wait for (and no empty set kept)

    async def _run(self, operation: Operation, payload: dict[str, Any]) -> None:
        session = self._session
        assert session is not None
        finished = True
        kind, status, started = "unknown", "cancelled", time.perf_counter()  # for the metrics
        try:
            if operation.after:
                await asyncio.wait(operation.after)
                operation.after = None
            payload = await self.on_operation(operation.op_id, payload)
            try:
                prepared = self._documents().prepare(payload["query"], payload.get("operationName"))
            except InvalidDocument as invalid:
                status = "invalid"
                self._log.operation_failed(operation.op_id, "invalid", invalid.errors)
                self._emit(operation, session.error(operation.op_id, invalid.errors))
                return
            kind = prepared.operation_type.value
            if prepared.operation_type is OperationType.SUBSCRIPTION:
                finished = not await self._subscribe(operation, prepared, payload)
                status = "ok" if not finished else "error" if operation.active else "cancelled"
                return
            self._settle(operation)
            context = OperationContext(self.scope, operation.op_id, prepared.operation_name)
            outcome = await self._runner.run(
                self, "execute", prepared, payload.get("variables"), context
            )
            status = "error" if outcome.errors else "ok"
            if outcome.errors:
                self._log.operation_failed(
                    operation.op_id,
                    "errors",
                    outcome.errors,
                    level=logging.WARNING,
                    operation_name=logs.operation_name(prepared.document, prepared.operation_name),
                )
            self._emit(operation, session.next(operation.op_id, outcome.result))
            self._emit(operation, session.complete(operation.op_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            status = "failed"
            errors = [{"message": "Internal server error"}]
            self._log.operation_failed(
                operation.op_id, "internal", errors, level=logging.ERROR, exc_info=True
            )
            self._emit(operation, session.error(operation.op_id, errors))
        finally:
            metrics.operation_finished(kind, status, started)
            if finished and self._operations.get(operation.op_id) is operation:
                del self._operations[operation.op_id]

    @classmethod
    def _documents(cls) -> DocumentCache:
        """The document cache of this class's schema, with its depth/complexity limits."""
        rules: tuple[type[ValidationRule], ...] = ()
        if cls.max_query_depth is not None or cls.max_query_complexity is not None:
            rules = (_limit_rule(cls.max_query_depth, cls.max_query_complexity),)
        return document_cache(graphql_schema(cls.schema), rules)

    @classmethod
    def _executor(cls) -> ThreadPoolExecutor:
        return executor_for(cls, cls.max_worker_threads)
