"""Serial log route: the tail of a VM's serial output, optionally followed live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hangar.api.auth import READ, Access
from hangar.api.deps import platform_of
from hangar.services import serial_log

router = APIRouter(prefix="/1.0/vms", tags=["vms"])

POLL = 0.05


async def _stream(path: Path, head: bytes, offset: int, follow: bool) -> AsyncIterator[bytes]:
    """``head`` (the backlog), then what the guest appends from ``offset`` on; the
    log is rotated under us now and then (services/serial_log.read_from follows it)."""
    if head:
        yield head.replace(b"\r\n", b"\n")
    while True:
        chunk, offset = await asyncio.to_thread(serial_log.read_from, path, offset)
        if chunk:
            yield chunk.replace(b"\r\n", b"\n")
        elif not follow:
            return
        else:
            if not path.parent.exists():
                return  # the VM was deleted
            await asyncio.sleep(POLL)


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
    head, offset = await asyncio.to_thread(serial_log.tail, path, lines)
    return StreamingResponse(_stream(path, head, offset, follow), media_type="text/plain")
