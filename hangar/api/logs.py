"""Serial log route: the tail of a VM's serial output, optionally followed live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hangar.api.auth import READ, Access
from hangar.api.deps import platform_of

router = APIRouter(prefix="/1.0/vms", tags=["vms"])

POLL = 0.05
TAIL_WINDOW = 256 * 1024


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` start."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if lines <= 0:
        return size
    with path.open("rb") as fh:
        start = max(0, size - TAIL_WINDOW)
        fh.seek(start)
        data = fh.read()
    # A trailing newline ends the last line rather than starting an empty one.
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return start
    return start + cut + 1


async def _stream(path: Path, offset: int, follow: bool) -> AsyncIterator[bytes]:
    while True:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
            if follow and not path.parent.exists():
                return  # the VM was deleted
        if chunk:
            offset += len(chunk)
            yield chunk.replace(b"\r\n", b"\n")
        elif not follow:
            return
        else:
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
    offset = await asyncio.to_thread(_tail_offset, path, lines)
    return StreamingResponse(_stream(path, offset, follow), media_type="text/plain")
