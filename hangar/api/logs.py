"""Serial log route: the tail of a VM's serial output, optionally followed live."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hangar.api.auth import READ, Access
from hangar.api.deps import platform_of
from hangar.api.sessions import sessions_of

router = APIRouter(prefix="/1.0/vms", tags=["vms"])


@router.get("/{name}/logs", response_class=StreamingResponse)
async def vm_logs(
    request: Request,
    name: str,
    lines: int = Query(100, ge=0, le=100000, description="how many last lines to send first"),
    follow: bool = Query(False, description="keep sending new output until the client leaves"),
    scope: Access = READ,
) -> StreamingResponse:
    vms = platform_of(request).vms
    if not follow:
        output = await vms.serial_output(name, scope.project, lines=lines, follow=False)
        return StreamingResponse(output, media_type="text/plain")
    sessions = sessions_of(request)
    await vms.get(name, scope.project)  # 404 before the stream starts

    async def followed() -> AsyncIterator[bytes]:
        # Until the client leaves, the VM goes or the session ends (its token revoked).
        with sessions.open(scope) as session:
            output = await vms.serial_output(
                name, scope.project, lines=lines, follow=True, ended=session.ended
            )
            async for chunk in output:
                yield chunk

    return StreamingResponse(followed(), media_type="text/plain")
