"""Structured logs: one record per connection event and per failed operation, with ids.

gqlws logs through the standard ``logging`` module. Records about a
connection carry these attributes (set with ``extra=``, so any formatter or
handler can read them):

* ``event``: what happened: ``connected`` (the WebSocket was accepted, with
  its ``subprotocol``), ``rejected`` (refused: no common subprotocol, the
  edge is draining, or ``on_connect`` raised; with the close ``code``),
  ``closed`` (the socket is gone: ``code``, ``initiator``, ``duration``),
  ``operation_failed`` (a request answered with errors: ``reason``,
  ``errors``, the count);
* ``connection_id``: a short random id per WebSocket, the thread through
  every record of one connection;
* ``edge_id``: the edge holding it, as ``manage.py gqlws status`` lists it;
* ``operation_id``: the client's id of the operation, where one is concerned.

Nothing a client sent is logged (payloads, variables, query text, tokens,
``on_connect``'s error message) unless ``GQLWS["LOG_PAYLOADS"] = True``, a
switch for debugging: then ``reason`` texts and error messages are added.

To get one JSON object per line, install ``JsonFormatter``::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "gqlws.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"gqlws": {"handlers": ["console"], "level": "INFO"}},
    }

which prints, for a connection closed by its client::

    {"time": "2025-01-01T12:00:00.000Z", "level": "INFO", "logger": "gqlws.consumer",
     "message": "Connection closed (1000)", "event": "closed", "connection_id": "5f0c2a9e41d7",
     "edge_id": "0a1b...", "code": 1000, "initiator": "client", "duration": 12.5}
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import MutableMapping
from typing import Any

from graphql import DocumentNode, get_operation_ast

from . import runtime

__all__ = [
    "ConnectionLogger",
    "JsonFormatter",
    "new_connection_id",
    "operation_name",
    "payloads_logged",
]

#: Attributes every ``LogRecord`` has: the rest came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def new_connection_id() -> str:
    """A short random id for one connection (48 bits: unique enough for logs)."""
    return uuid.uuid4().hex[:12]


def operation_name(document: DocumentNode, requested: str | None) -> str | None:
    """The name of the operation that runs, as the document spells it (a GraphQL name).

    Not the request's ``operationName``, which is any string a client sent.
    """
    operation = get_operation_ast(document, requested)
    return None if operation is None or operation.name is None else operation.name.value


def payloads_logged() -> bool:
    """Whether records may hold what clients sent (``GQLWS["LOG_PAYLOADS"]``)."""
    return runtime.settings().LOG_PAYLOADS


class ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one connection: its records carry ``connection_id`` and ``edge_id``.

    ``edge_id`` is given, or bound once known. Cheap to make: the consumer
    makes one per record rather than holding one per connection. Unlike the
    stdlib adapter (before Python 3.13), the ``extra=`` of a call is merged
    in, not thrown away::

        log = ConnectionLogger(logging.getLogger("gqlws.consumer"), "5f0c2a9e41d7")
        log.event("closed", "Connection closed (%s)", 1000, code=1000)
    """

    def __init__(
        self, logger: logging.Logger, connection_id: str, edge_id: str | None = None
    ) -> None:
        extra: dict[str, Any] = {"connection_id": connection_id, "edge_id": edge_id}
        super().__init__(logger, extra)

    def bind(self, **fields: Any) -> None:
        """Add fields to every later record of this logger (``edge_id`` once known)."""
        self.extra = {**(self.extra or {}), **fields}

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def event(
        self,
        event: str,
        message: str,
        *args: Any,
        level: int = logging.INFO,
        operation_id: str | None = None,
        exc_info: Any = None,
        **fields: Any,
    ) -> None:
        """Log one ``event`` of this connection; ``fields`` become record attributes."""
        if not self.isEnabledFor(level):
            return
        extra = {"event": event, **fields}
        if operation_id is not None:
            extra["operation_id"] = operation_id
        self.log(level, message, *args, extra=extra, exc_info=exc_info)

    def connected(self, subprotocol: str, path: str | None) -> None:
        self.event(
            "connected",
            "Connection accepted (%s)",
            subprotocol,
            subprotocol=subprotocol,
            path=path,
        )

    def rejected(self, code: int, reason: str, **fields: Any) -> None:
        """The connection is refused (``reason``: one of gqlws's words, never a client's text)."""
        self.event(
            "rejected",
            "Connection rejected (%s)",
            reason,
            code=int(code),
            reason=reason,
            **fields,
        )

    def closed(self, code: int | None, initiator: str, duration: float) -> None:
        self.event(
            "closed",
            "Connection closed (%s)",
            code,
            code=code,
            initiator=initiator,
            duration=round(duration, 3),
        )

    def operation_failed(
        self,
        operation_id: str,
        reason: str,
        errors: list[dict[str, Any]],
        *,
        level: int = logging.INFO,
        exc_info: Any = None,
        **fields: Any,
    ) -> None:
        """One request answered with ``errors``: their count, and their messages if allowed.

        ``reason`` is one of gqlws's words ("invalid", "errors", "internal"...),
        never a text from the client or the schema: error messages quote
        arguments and resolvers' exceptions, so they come only with
        ``LOG_PAYLOADS``.
        """
        if payloads_logged():
            fields["messages"] = [error.get("message") for error in errors]
        self.event(
            "operation_failed",
            "Operation failed (%s)",
            reason,
            level=level,
            operation_id=operation_id,
            exc_info=exc_info,
            reason=reason,
            errors=len(errors),
            **fields,
        )


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, then every extra field.

    Values that JSON cannot hold are written as their ``repr``; a traceback
    goes in ``exc_info`` as text. Works for any logger, not only gqlws's.
    """

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        found: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                found[key] = value
        if record.exc_info:
            found["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            found["exc_info"] = record.exc_text
        if record.stack_info:
            found["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(found, default=repr, ensure_ascii=False)
