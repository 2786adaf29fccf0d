"""Long-running operations: an id, a status, progress, cancel, and the result kept a while.

An operation runs one coroutine as an asyncio task. Cancelling cancels the task;
work done in a thread checks :meth:`Operation.checkpoint` (called by its progress
callback) and stops there, so every kind of operation can clean up after itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from hangar.errors import Conflict, HangarError, NotFound
from hangar.services.events import EventBus

Status = Literal["running", "success", "failure", "cancelled"]
KEEP_FINISHED_SECONDS = 3600.0
KEEP_FINISHED_MAX = 500


class OperationCancelled(Exception):
    """Raised inside an operation's work when it has been asked to stop."""


class OperationView(BaseModel):
    id: str
    project: str
    type: str
    description: str
    status: Status
    created_at: str
    updated_at: str
    progress_percent: float | None = None
    progress_bytes: int | None = None
    progress_message: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    may_cancel: bool = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Operation:
    def __init__(self, manager: OperationManager, project: str, type: str, description: str):
        self.manager = manager
        self.view = OperationView(
            id=uuid.uuid4().hex,
            project=project,
            type=type,
            description=description,
            status="running",
            created_at=_now(),
            updated_at=_now(),
        )
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.finished_at: float | None = None
        self.done = asyncio.Event()

    @property
    def id(self) -> str:
        return self.view.id

    def checkpoint(self) -> None:
        """Raise :class:`OperationCancelled` if a cancel was asked for. Thread-safe."""
        if self.cancel_requested:
            raise OperationCancelled(self.id)

    def progress(
        self, message: str = "", *, percent: float | None = None, nbytes: int | None = None
    ) -> None:
        """Record progress (callable from a worker thread), then honour a pending cancel."""
        self.checkpoint()
        update: dict[str, Any] = {"updated_at": _now()}
        if message:
            update["progress_message"] = message
        if percent is not None:
            update["progress_percent"] = round(max(0.0, min(100.0, percent)), 1)
        if nbytes is not None:
            update["progress_bytes"] = nbytes
        self.view = self.view.model_copy(update=update)
        self.manager.announce(self)

    def _finish(self, status: Status, **fields: Any) -> None:
        update = {"status": status, "updated_at": _now(), "may_cancel": False, **fields}
        if status == "success":
            update["progress_percent"] = 100.0
        self.view = self.view.model_copy(update=update)
        self.finished_at = time.monotonic()
        self.done.set()
        self.manager.announce(self)


Work = Callable[[Operation], Awaitable[BaseModel]]


class OperationManager:
    def __init__(self, events: EventBus):
        self.events = events
        self._ops: dict[str, Operation] = {}

    def announce(self, op: Operation) -> None:
        self.events.publish("operation", op.view.project, op.view.model_dump(mode="json"))

    def start(self, project: str, type: str, description: str, work: Work) -> Operation:
        self._expire()
        op = Operation(self, project, type, description)
        self._ops[op.id] = op
        op.task = asyncio.create_task(self._run(op, work))
        self.announce(op)
        return op

    async def _run(self, op: Operation, work: Work) -> None:
        try:
            result = await work(op)
        except (OperationCancelled, asyncio.CancelledError):
            op._finish("cancelled", error={"error": "cancelled", "message": "cancelled on request"})
        except HangarError as exc:
            op._finish("failure", error=exc.to_dict())
        except Exception as exc:  # an operation must always end in a recorded state
            op._finish("failure", error={"error": "failed", "message": repr(exc)})
        else:
            op._finish("success", result=result.model_dump(mode="json"))

    def get(self, op_id: str, project: str | None = None) -> Operation:
        op = self._ops.get(op_id)
        if op is None or (project is not None and op.view.project != project):
            raise NotFound(
                f"no operation with id '{op_id}'",
                hint=f"finished operations are kept {KEEP_FINISHED_SECONDS:g} s",
            )
        return op

    def list(self, project: str | None = None) -> list[OperationView]:
        self._expire()
        return [
            op.view for op in self._ops.values() if project is None or op.view.project == project
        ]

    def cancel(self, op_id: str, project: str | None = None) -> Operation:
        op = self.get(op_id, project)
        if op.done.is_set():
            raise Conflict(
                f"operation '{op_id}' has already finished ({op.view.status})",
                hint="only running operations can be cancelled",
            )
        op.cancel_requested = True
        op.view = op.view.model_copy(update={"progress_message": "cancelling"})
        return op

    def _expire(self) -> None:
        now = time.monotonic()
        finished = sorted(
            (op for op in self._ops.values() if op.finished_at is not None),
            key=lambda op: op.finished_at or 0.0,
        )
        excess = len(finished) - KEEP_FINISHED_MAX
        for i, op in enumerate(finished):
            if i < excess or now - (op.finished_at or now) > KEEP_FINISHED_SECONDS:
                self._ops.pop(op.id, None)

    async def shutdown(self) -> None:
        tasks = [op.task for op in self._ops.values() if op.task and not op.task.done()]
        for task in tasks:
            task.cancel()
        for op in self._ops.values():
            op.cancel_requested = True
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
