"""The serial console over a websocket: bytes in both directions, one client at a time.

QEMU's chardev socket accepts one connection; a second one would sit unread
in the backlog, so hangard refuses it with a clear reason instead.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from hangar.api.auth import Level, authorize_ws
from hangar.api.deps import platform_of
from hangar.api.sessions import Session, sessions_of
from hangar.errors import HangarError

router = APIRouter(prefix="/1.0/vms", tags=["vms"])

# Websocket close codes in the private range 4000-4999, mirroring HTTP statuses.
CLOSE_BASE = 4000
_in_use: set[str] = set()


@router.websocket("/{name}/console")
async def console(websocket: WebSocket, name: str, project: str | None = Query(None)) -> None:
    """Needs an operator (or admin) token of the VM's project, or the local socket."""
    await websocket.accept()
    try:
        scope = authorize_ws(websocket, project, Level.OPERATE)
        vms = platform_of(websocket).vms
        await vms.get(name, scope.project)  # 404 before the in-use check
    except HangarError as exc:
        await websocket.close(code=CLOSE_BASE + exc.http_status, reason=str(exc)[:120])
        return
    key = f"{scope.project}/{name}"
    if key in _in_use:
        await websocket.close(
            code=CLOSE_BASE + 409, reason=f"the console of '{name}' is in use by another client"
        )
        return
    _in_use.add(key)
    try:
        try:
            reader, writer = await vms.open_console(name, scope.project)
        except HangarError as exc:
            await websocket.close(code=CLOSE_BASE + exc.http_status, reason=str(exc)[:120])
            return
        except OSError as exc:
            await websocket.close(code=CLOSE_BASE + 503, reason=f"console not reachable: {exc}")
            return
        with sessions_of(websocket).open(scope) as session:
            await pump(
                websocket, reader, writer, closed="console closed (VM stopped)", session=session
            )
    finally:
        _in_use.discard(key)


async def pump(
    websocket: WebSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    closed: str,
    session: Session,
    chunk: int = 4096,
) -> None:
    """Copy bytes both ways between ``websocket`` and a guest's socket until either
    side ends or ``session`` is ended (its token revoked); then close both (the
    websocket with reason ``closed``, or the session's)."""

    async def guest_to_client() -> None:
        while data := await reader.read(chunk):
            await websocket.send_bytes(data)

    async def client_to_guest() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = [
        asyncio.create_task(guest_to_client()),
        asyncio.create_task(client_to_guest()),
        asyncio.create_task(session.ended.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        with contextlib.suppress(Exception):
            if session.ended.is_set():
                await websocket.close(code=session.code, reason=session.reason)
            else:
                await websocket.close(code=1000, reason=closed)
