"""The event stream: a websocket sending one JSON event per message.

``/1.0/events?project=P&type=lifecycle,network,operation,audit``. The first message has
type ``subscribed``: from then on no matching event is missed. A token sees its own
project only; the local root sees every project unless it names one.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from hangar.api.auth import Level, authorize_ws
from hangar.api.console import CLOSE_BASE
from hangar.api.deps import platform_of
from hangar.api.sessions import sessions_of
from hangar.errors import Forbidden, HangarError, InvalidInput
from hangar.services.events import EVENT_TYPES, Event

router = APIRouter(prefix="/1.0", tags=["events"])


def parse_types(text: str | None) -> set[str] | None:
    if not text:
        return None
    types = {t.strip() for t in text.split(",") if t.strip()}
    unknown = types - set(EVENT_TYPES)
    if unknown:
        raise InvalidInput(
            f"unknown event type(s): {', '.join(sorted(unknown))}",
            hint=f"types: {', '.join(EVENT_TYPES)}",
        )
    return types


@router.websocket("/events")
async def events(
    websocket: WebSocket,
    project: str | None = Query(None),
    type: str | None = Query(None),
) -> None:
    await websocket.accept()
    try:
        scope = authorize_ws(websocket, project, Level.READ)
        types = parse_types(type)
        if scope.caller.level < Level.ADMIN:
            # Audit entries are for those who may read the audit log (admins).
            if types is not None and "audit" in types:
                raise Forbidden(
                    "audit events are for project admins",
                    hint="leave 'audit' out of type=, or use an admin token",
                )
            types = (types or set(EVENT_TYPES)) - {"audit"}
    except HangarError as exc:
        await websocket.close(code=CLOSE_BASE + exc.http_status, reason=str(exc)[:120])
        return
    projects = None if scope.filter is None else {scope.filter}
    subscription = platform_of(websocket).events.subscribe(projects, types)
    # First message: the subscription is live; every event after it will be delivered.
    hello = Event(
        type="subscribed",
        project=scope.filter or "*",
        at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        data={"types": sorted(types) if types else list(EVENT_TYPES)},
    )
    await websocket.send_text(hello.model_dump_json())

    async def client_gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    watcher = asyncio.create_task(client_gone())
    with sessions_of(websocket).open(scope) as session:
        ended = asyncio.create_task(session.ended.wait())
        try:
            while not watcher.done() and not ended.done():
                getter = asyncio.create_task(subscription.get())
                await asyncio.wait({getter, watcher, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                await websocket.send_text(getter.result().model_dump_json())
            if session.ended.is_set():  # its token was revoked, or its project deleted
                await websocket.close(code=session.code, reason=session.reason)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            subscription.close()
            for task in (watcher, ended):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
