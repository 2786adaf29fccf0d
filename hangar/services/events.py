"""The event bus: VM state changes, networks created and deleted, operation progress
and audit entries, fanned out to every subscriber (the ``/1.0/events`` websocket)
whose filter matches.

Publishing never blocks: a subscriber that falls more than ``QUEUE_SIZE`` events
behind loses the oldest ones and is told how many it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

EventType = Literal["lifecycle", "network", "operation", "audit"]
EVENT_TYPES: tuple[str, ...] = ("lifecycle", "network", "operation", "audit")
QUEUE_SIZE = 1000


class Event(BaseModel):
    type: str
    project: str
    at: str
    data: dict[str, Any]


class Subscription:
    def __init__(self, bus: EventBus, projects: set[str] | None, types: set[str] | None):
        self.bus = bus
        self.projects = projects
        self.types = types
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def matches(self, event: Event) -> bool:
        return (self.projects is None or event.project in self.projects) and (
            self.types is None or event.type in self.types
        )

    def offer(self, event: Event) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.subscribers.discard(self)


class EventBus:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember hangard's loop, so threads (image builds) can publish too."""
        self._loop = loop

    def subscribe(
        self, projects: Iterable[str] | None = None, types: Iterable[str] | None = None
    ) -> Subscription:
        sub = Subscription(
            self,
            set(projects) if projects is not None else None,
            set(types) if types is not None else None,
        )
        self.subscribers.add(sub)
        return sub

    def publish(self, type: str, project: str, data: dict[str, Any]) -> Event:
        event = Event(
            type=type,
            project=project,
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            data=data,
        )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, event)
        else:
            self._deliver(event)
        return event

    def _deliver(self, event: Event) -> None:
        for sub in list(self.subscribers):
            if sub.matches(event):
                sub.offer(event)
