"""``GraphqlWsConsumer``: the Channels consumer that serves GraphQL over WebSocket.

A thin adapter. Frames go into the connection's protocol session
(``gqlws.protocol``), whose actions come back out here: frames to send, a
close, a connection to authorise, operations to start or stop. Operations
run as tasks, never awaited from the socket's read loop, so a slow resolver
never delays a ``ping``, a ``complete`` or another request.

Subclass it and set ``schema``; the other class attributes are the
settings of django-channels-graphql-ws, with the same meaning::

    class MyGraphqlWsConsumer(gqlws.GraphqlWsConsumer):
        schema = graphql_schema
        send_keepalive_every = 42       # seconds; None: no keepalive
        strict_ordering = False         # True: one request at a time, in order
        max_worker_threads = None       # threads running resolvers
        middleware = [my_middleware]    # or a graphql MiddlewareManager

        async def on_connect(self, payload):
            ...  # raise to reject the connection
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from graphql import OperationType

from . import protocol
from .context import OperationContext
from .execution import (
    InvalidDocument,
    document_cache,
    execute,
    format_result,
    graphql_schema,
    middleware_list,
    run_on_loop,
)
from .operation import Operation, TaskGroup

__all__ = ["GraphqlWsConsumer"]

LOG = logging.getLogger(__name__)

#: RFC 6455 caps a close reason at 123 bytes of UTF-8.
_MAX_CLOSE_REASON = 123


def _close_reason(reason: str) -> str:
    return reason.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


def _close_db_connections() -> None:
    """What Django does around each request, done around each operation's thread work."""
    from django.db import close_old_connections

    close_old_connections()


class GraphqlWsConsumer(AsyncWebsocketConsumer):
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

    _executors: ClassVar[dict[type, ThreadPoolExecutor]] = {}
    _executors_lock: ClassVar[threading.Lock] = threading.Lock()

    # ---- Hooks for subclasses ---------------------------------------------

    async def on_connect(self, payload: Any) -> Any:
        """Called with the ``connection_init`` payload; raise to reject the client.

        Returning a dict makes it the ``connection_ack`` payload.
        """

    async def on_operation(self, op_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Called before an operation runs; may return a modified payload."""
        return payload

    # ---- ASGI dispatch ----------------------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: protocol.ProtocolSession | None = None
        self._operations: dict[str, Operation] = {}
        self._tasks = TaskGroup(LOG)
        self._closed = False
        self._serial: asyncio.Queue[Operation] | None = None

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
            await self._close(protocol.CloseCode.INTERNAL_SERVER_ERROR, "Internal server error")

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        session = protocol.negotiate(self.scope.get("subprotocols") or [])
        if session is None:
            # Accept, explain, then close: a refused handshake would only tell
            # the client "403", and some servers (Daphne) drop close reasons, so
            # the reason also goes out as one text frame.
            offered = ", ".join(self.scope.get("subprotocols") or []) or "none"
            reason = (
                f"Subprotocol not acceptable: offered {offered}; "
                f"expected {' or '.join(protocol.SUPPORTED_SUBPROTOCOLS)}"
            )
            await self.accept()
            await self._send_message({"type": "error", "payload": {"message": reason}})
            await self._close(protocol.CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, reason)
            return
        self._session = session
        await self.accept(session.subprotocol)
        self._spawn(self._init_timeout(), "init-timeout")

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._session is None or self._closed:
            return
        await self._apply(self._session.receive(message.get("text"), message.get("bytes")))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        for operation in self._operations.values():
            operation.cancel()
        self._operations.clear()
        await self._tasks.cancel_all()
        raise StopConsumer()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A background task of this connection; a failure in it closes with 4500."""
        return self._tasks.spawn(self._guarded(coro), name=name)

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
            await self._close(protocol.CloseCode.INTERNAL_SERVER_ERROR, "Internal server error")

    # ---- Applying protocol actions ----------------------------------------

    async def _apply(self, actions: list[protocol.Action]) -> None:
        for action in actions:
            if isinstance(action, protocol.Send):
                await self._send_message(action.message)
            elif isinstance(action, protocol.Close):
                await self._close(action.code, action.reason)
            elif isinstance(action, protocol.Authorize):
                self._spawn(self._authorize(action.payload), "on-connect")
            elif isinstance(action, protocol.Start):
                self._start(action.op_id, dict(action.payload))
            elif isinstance(action, protocol.Stop):
                self._stop(action.op_id)

    async def _send_message(self, message: dict[str, Any]) -> None:
        if not self._closed:
            await self.send(text_data=json.dumps(message, separators=(",", ":")))

    async def _close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            # Let the session forget its operations; only the close is sent.
            self._session.close(code, reason)
        await self.close(code=int(code), reason=_close_reason(reason))
        # After the close frame is queued: the caller may be one of these tasks.
        for operation in self._operations.values():
            operation.cancel()
        self._operations.clear()

    # ---- Connection handshake ---------------------------------------------

    async def _init_timeout(self) -> None:
        await asyncio.sleep(self.connection_init_wait_timeout)
        assert self._session is not None
        await self._apply(self._session.init_timeout())

    async def _authorize(self, payload: Any) -> None:
        assert self._session is not None
        try:
            ack_payload = await self.on_connect(payload)
        except Exception as error:
            LOG.info("Connection rejected by on_connect: %r", error)
            await self._apply(self._session.reject_connection(str(error) or type(error).__name__))
            return
        if ack_payload is not None and not isinstance(ack_payload, dict):
            ack_payload = None
        await self._apply(self._session.accept_connection(ack_payload))
        if self.send_keepalive_every:
            self._spawn(self._keepalive(self.send_keepalive_every), "keepalive")

    async def _keepalive(self, every: float) -> None:
        assert self._session is not None
        # The legacy protocol's server sends a first ka right after the ack.
        if self._session.subprotocol == protocol.GRAPHQL_WS:
            await self._apply(self._session.keepalive())
        while not self._closed:
            await asyncio.sleep(every)
            await self._apply(self._session.keepalive())

    # ---- Operations -------------------------------------------------------

    def _start(self, op_id: str, payload: dict[str, Any]) -> None:
        operation = Operation(op_id, payload)
        self._operations[op_id] = operation
        if self.strict_ordering:
            if self._serial is None:
                self._serial = asyncio.Queue()
                self._spawn(self._run_serially(self._serial), "strict-ordering")
            self._serial.put_nowait(operation)
        else:
            operation.task = self._spawn(self._run(operation), f"operation {op_id}")

    def _stop(self, op_id: str) -> None:
        operation = self._operations.pop(op_id, None)
        if operation is not None:
            operation.cancel()

    async def _run_serially(self, queue: asyncio.Queue[Operation]) -> None:
        # Each operation still gets a task of its own, so that stopping one
        # cancels that task and not this loop.
        while True:
            operation = await queue.get()
            if not operation.active:
                continue
            operation.task = self._spawn(self._run(operation), f"operation {operation.op_id}")
            await asyncio.wait([operation.task])

    async def _run(self, operation: Operation) -> None:
        session = self._session
        assert session is not None
        try:
            payload = await self.on_operation(operation.op_id, operation.payload)
            schema = graphql_schema(self.schema)
            try:
                prepared = document_cache(schema).prepare(
                    payload["query"], payload.get("operationName")
                )
            except InvalidDocument as invalid:
                await self._emit(operation, session.error(operation.op_id, invalid.errors))
                return
            if prepared.operation_type is OperationType.SUBSCRIPTION:
                await self._subscribe(operation, prepared)
                return
            context = OperationContext(self.scope, operation.op_id, prepared.operation_name)
            result = await self._in_thread(
                execute,
                schema,
                prepared,
                variables=payload.get("variables"),
                context=context,
                middleware=middleware_list(self.middleware),
                run_async=run_on_loop(asyncio.get_running_loop()),
            )
            await self._emit(operation, session.next(operation.op_id, format_result(result)))
            await self._emit(operation, session.complete(operation.op_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("Operation %r failed", operation.op_id)
            errors = [{"message": "Internal server error"}]
            await self._emit(operation, session.error(operation.op_id, errors))
        finally:
            if self._operations.get(operation.op_id) is operation:
                del self._operations[operation.op_id]

    async def _subscribe(self, operation: Operation, prepared: Any) -> None:
        assert self._session is not None
        errors = [{"message": "Subscriptions are not available on this server yet"}]
        await self._emit(operation, self._session.error(operation.op_id, errors))

    async def _emit(self, operation: Operation, actions: list[protocol.Action]) -> None:
        """Apply actions for ``operation`` unless it was stopped or its id reused."""
        if self._operations.get(operation.op_id) is operation:
            await self._apply(actions)

    async def _in_thread(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run blocking user-facing work in this class's thread pool."""

        def work() -> Any:
            _close_db_connections()
            try:
                return func(*args, **kwargs)
            finally:
                _close_db_connections()

        call = functools.partial(contextvars.copy_context().run, work)
        return await asyncio.get_running_loop().run_in_executor(self._executor(), call)

    @classmethod
    def _executor(cls) -> ThreadPoolExecutor:
        executor = cls._executors.get(cls)
        if executor is None:
            with cls._executors_lock:
                executor = cls._executors.get(cls)
                if executor is None:
                    executor = ThreadPoolExecutor(
                        max_workers=cls.max_worker_threads, thread_name_prefix="gqlws"
                    )
                    cls._executors[cls] = executor
        return executor
