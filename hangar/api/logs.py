"""Serial log route: the tail of a VM's serial output, optionally followed live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hangar.api.auth import READ, Access
from hangar.api.deps import platform_of
from hangar.api.sessions import Session, sessions_of
from hangar.services.qemu import serial_log

router = APIRouter(prefix="/1.0/vms", tags=["vms"])

POLL = 0.05


async def _stream(
    path: Path, first: bytes, offset: int, follow: bool, session: Session | None = None
) -> AsyncIterator[bytes]:
    """``first``, then what the log gains (across its rotation: serial_log.read_from),
    until the client leaves, the VM goes or the session ends (its token revoked).
    The serial port's CRLF becomes LF, also when a read ends between the two."""
    held = b""

    def lf(chunk: bytes) -> bytes:
        nonlocal held
        chunk = held + chunk
        held = b"\r" if chunk.endswith(b"\r") else b""
        return chunk[: len(chunk) - len(held)].replace(b"\r\n", b"\n")

    if first:
        yield lf(first)
    while follow and (session is None or not session.ended.is_set()):
        chunk, offset = await asyncio.to_thread(serial_log.read_from, path, offset)
        if chunk:
            yield lf(chunk)
        elif not path.parent.exists():
            return  # the VM was deleted
        else:
            await asyncio.sleep(POLL)
    if held:
        yield held


@router.get("/{name}/logs", response_class=StreamingResponse)
async def vm_logs(
    request: Request,
    name: str,
    lines: int = Query(100, ge=0, le=100000, description="how many last lines to send first"),
    follow: bool = Query(False, description="keep sending new output until the client leaves"),
    scope: Access = READ,
) -> StreamingResponse:
    view = await platform_of(request).vms.get(name, scope.project)
    path = Path(view.serial_log)
    first, offset = await asyncio.to_thread(serial_log.tail, path, lines)
    if not follow:
        return StreamingResponse(_stream(path, first, offset, follow), media_type="text/plain")
    sessions = sessions_of(request)

    async def followed() -> AsyncIterator[bytes]:
        with sessions.open(scope) as session:
            async for chunk in _stream(path, first, offset, follow, session):
                yield chunk

    return StreamingResponse(followed(), media_type="text/plain")
