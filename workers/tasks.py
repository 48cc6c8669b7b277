"""The tasks of the gqlws workers: thin wrappers around ``gqlws.remote``.

Delivery guarantees (DESIGN.md, Guarantee 3):

* ``gqlws.execute`` (queries, mutations, ``subscribe``) is acknowledged on
  receipt: a worker lost mid-run loses the task, never runs it twice; the
  edge answers the client with an error when its timeout passes. Over
  Redis, not even a worker lost between receipt and start has it run again
  later (``gqlws.kombu_redis``).
* ``gqlws.fanout`` is acknowledged late and rejected when its worker dies,
  so another worker runs it again; the edge drops what it already has by
  offset, which makes the redelivery harmless.
"""

from __future__ import annotations

from typing import Any

from broadcast import EventKind
from gqlws import remote, runtime

from .app import app

__all__ = ["execute", "fanout", "issue", "renotify"]


@app.task(name="gqlws.execute", acks_late=False)
def execute(request: dict[str, Any]) -> None:
    remote.run_request(runtime.fabric(), request)


@app.task(name="gqlws.fanout", acks_late=True, reject_on_worker_lost=True)
def fanout(group: str, epoch: str, offset: int, start: int = 0, stop: int | None = None) -> int:
    settings = runtime.settings()

    def split(chunk_start: int, chunk_stop: int) -> None:
        fanout.apply_async(
            (group, epoch, offset, chunk_start, chunk_stop), queue=settings.CELERY_QUEUE
        )

    return remote.fan_out(
        runtime.fabric(),
        group,
        epoch,
        offset,
        chunk_size=settings.FANOUT_CHUNK_SIZE,
        start=start,
        stop=stop,
        split=split,
    )


@app.task(name="gqlws.renotify", acks_late=True, reject_on_worker_lost=True)
def renotify(
    edge_id: str, group: str, epoch: str, offsets: list[int], members: list[tuple[str, bytes]]
) -> None:
    """Recompute the notifications an edge found missing (a gap) for some of its subscribers."""
    remote.renotify(runtime.fabric(), edge_id, group, epoch, offsets, members)


@app.task(name="gqlws.issue")
def issue(group: str, kind: str, payload: bytes) -> None:
    """Issue an event from a worker: ``apply_async`` of a broadcast, with its options."""
    runtime.issue(group, EventKind(kind), payload)
