"""The consumer's subscription side: subscribe, receive notifications, end.

Kept apart from ``consumer`` (a mixin of ``GraphqlWsConsumer``) so each
module holds one concern. The life of a subscription:

1. ``_subscribe`` runs the document with a ``SubscribePhase`` root (the
   ``subscribe`` callback picks the groups), registers it on this loop's
   ``Edge`` (the fabric records, per group, the offset current at
   registration), and only then sends the optional confirmation: every
   broadcast issued after the client saw the confirmation reaches it.
2. ``_on_delivery`` receives its notifications in order and queues them in
   the outbox as notifications (the frames the overflow policy may drop).
3. ``_end_subscriptions`` unregisters it and runs ``unsubscribed``, once,
   whether the client stopped it, the server unsubscribed its group, or the
   connection went away.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from broadcast import Delivery, DeliveryKind, Position, SharedDelivery

from . import metrics, protocol
from .context import OperationContext
from .edge import Edge
from .execution import PreparedOperation
from .operation import LiveSubscription, Operation

if TYPE_CHECKING:
    from .executors import Executor
    from .logs import ConnectionLogger
    from .outbox import Outbox

__all__ = ["SubscriptionsMixin"]

LOG = logging.getLogger(__name__)


class SubscriptionsMixin:
    """Subscriptions of one connection (mixed into ``GraphqlWsConsumer``)."""

    if TYPE_CHECKING:  # provided by GraphqlWsConsumer
        scope: dict[str, Any]
        schema: ClassVar[Any]
        middleware: ClassVar[Any]
        confirm_subscriptions: ClassVar[bool]
        subscription_confirmation_message: ClassVar[dict[str, Any]]
        _session: protocol.ProtocolSession | None
        _operations: dict[str, Operation]
        _outbox: Outbox

        @property
        def _log(self) -> ConnectionLogger: ...

        def _emit(self, operation: Operation, actions: list[protocol.Action]) -> None: ...
        def _apply(self, actions: list[protocol.Action]) -> None: ...
        def _end_later(self, operations: list[Operation], name: str) -> None: ...

        _runner: Executor

    async def _subscribe(
        self, operation: Operation, prepared: PreparedOperation, payload: dict[str, Any]
    ) -> bool:
        """Activate a subscription; True once it is live (the operation stays open)."""
        session = self._session
        assert session is not None
        op_id = operation.op_id
        variables = payload.get("variables")
        context = OperationContext(self.scope, op_id, prepared.operation_name)
        outcome = await self._runner.run(self, "subscribe", prepared, variables, context)
        if outcome.errors:
            self._log.operation_failed(op_id, "subscribe", outcome.errors)
            self._emit(operation, session.error(op_id, outcome.errors))
            return False
        if not outcome.is_subscription:
            message = "The subscription field is not a gqlws Subscription"
            self._log.operation_failed(op_id, "not a subscription", [{"message": message}])
            self._emit(operation, session.error(op_id, [{"message": message}]))
            return False
        live = LiveSubscription(f"{op_id}:{uuid.uuid4().hex}", prepared, variables, context)
        live.name = metrics.subscription_name(outcome.groups)
        live.cohort = outcome.cohort
        target = _Target(self, operation, live)
        data = target.registration_data()
        registering = asyncio.ensure_future(
            Edge.current().subscribe(
                live.sub_id,
                outcome.groups,
                data,
                target,
                _resume_positions(payload),
                # Serialized data (distributed: the request, scope included,
                # ~0.7 KiB) is rebuilt from the live subscription when it is
                # needed again, not kept for every idle one.
                keep_data=not isinstance(data, bytes),
            )
        )
        try:
            # Shielded: a registration cut in half could stay in the fabric.
            await asyncio.shield(registering)
        except asyncio.CancelledError:
            await registering
            operation.subscription = live
            metrics.subscription_started(live.name)
            await self._end_subscriptions([operation])
            raise
        operation.subscription = live
        metrics.subscription_started(live.name)
        if self._operations.get(op_id) is not operation:
            # Stopped while registering: end it here, nobody else will.
            await self._end_subscriptions([operation])
            return False
        if self.confirm_subscriptions:
            self._emit(operation, session.next(op_id, dict(self.subscription_confirmation_message)))
        return True

    def _on_delivery(self, operation: Operation, delivery: Delivery | SharedDelivery) -> None:
        """One notification of ``operation``, in order, on the event loop."""
        if self._operations.get(operation.op_id) is not operation or self._session is None:
            return
        if delivery.kind is DeliveryKind.RESULT:
            # The payload was encoded once for its whole cohort, its stream
            # position included: only the operation id is spliced in here.
            frame = self._session.next_text(operation.op_id, delivery.body)
            if frame is not None:
                self._outbox.notify(frame, delivery.issued_at)
        elif delivery.kind is DeliveryKind.SKIP:
            metrics.notification_skipped()
        elif delivery.kind is DeliveryKind.END:
            del self._operations[operation.op_id]
            self._apply(self._session.complete(operation.op_id))
            self._end_later([operation], f"unsubscribe {operation.op_id}")
        elif delivery.kind is DeliveryKind.LOST:
            metrics.resync("lost")
            del self._operations[operation.op_id]
            self._apply(self._session.error(operation.op_id, [_resync_error(delivery, True)]))
            self._end_later([operation], f"lost {operation.op_id}")
        elif delivery.kind is DeliveryKind.RESYNC:
            metrics.resync("resync")
            notice = {"data": None, "errors": [_resync_error(delivery, False)]}
            self._apply(self._session.next(operation.op_id, notice))

    async def _end_subscriptions(self, operations: list[Operation]) -> None:
        """Unregister subscriptions and run their ``unsubscribed`` callbacks, once each."""
        ending = []
        for operation in operations:
            live = operation.subscription
            if live is not None and not live.ended:
                live.ended = True
                ending.append(self._end_one(operation, live))
        if ending:
            await asyncio.gather(*ending)

    async def _end_one(self, operation: Operation, live: LiveSubscription) -> None:
        metrics.subscription_ended(live.name)
        try:
            await Edge.current().unsubscribe(live.sub_id)
            outcome = await self._runner.run(
                self, "unsubscribed", live.prepared, live.variables, live.context
            )
            if outcome.errors:
                LOG.error("unsubscribed of %r failed: %s", operation.op_id, outcome.errors)
        except Exception:
            LOG.exception("Ending subscription %r failed", operation.op_id)


class _Target:
    """Where the edge hands a subscription's deliveries: ``_on_delivery`` of its operation.

    Held for as long as the subscription lives: one small object, where a
    ``functools.partial`` of a bound method was three (~0.25 KiB).
    """

    __slots__ = ("consumer", "live", "operation")

    def __init__(
        self, consumer: SubscriptionsMixin, operation: Operation, live: LiveSubscription
    ) -> None:
        self.consumer = consumer
        self.operation = operation
        self.live = live

    def __call__(self, delivery: Delivery | SharedDelivery) -> None:
        self.consumer._on_delivery(self.operation, delivery)

    def registration_data(self) -> Any:
        """What the fabric holds of this subscription, from its current context."""
        live = self.live
        consumer = self.consumer
        return consumer._runner.subscriber_data(
            consumer, live.prepared, live.variables, live.context, live.cohort
        )


def _resync_error(delivery: Delivery | SharedDelivery, ended: bool) -> dict[str, Any]:
    """The error telling a client that notifications were lost and it must resync."""
    what = "The subscription ended" if ended else "Notifications may have been lost"
    return {
        "message": f"{what}: {delivery.body}. Reload the current state to resync.",
        "extensions": {"code": "RESYNC", "ended": ended},
    }


def _resume_positions(payload: dict[str, Any]) -> dict[str, Position] | None:
    """``extensions.gqlws.resume`` of a subscribe request: the positions last seen.

    Each item is the ``extensions.gqlws`` of a notification received before
    (``{"group", "epoch", "offset"}``), the last one per group. Malformed
    items are ignored: a resume is a best effort, never a reason to refuse.
    """
    extensions = payload.get("extensions") or {}
    resume = (extensions.get("gqlws") or {}).get("resume") if isinstance(extensions, dict) else None
    if not isinstance(resume, list):
        return None
    positions: dict[str, Position] = {}
    for item in resume:
        if not isinstance(item, dict):
            continue
        group, epoch, offset = item.get("group"), item.get("epoch"), item.get("offset")
        if (
            isinstance(group, str)
            and isinstance(epoch, str)
            and type(offset) is int
            and offset >= 0
        ):
            positions[group] = Position(epoch, offset)
    return positions or None
