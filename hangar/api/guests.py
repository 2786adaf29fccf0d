"""Inside the guest: agent exec and info, the screen (PNG and a VNC websocket), the ISO.

The VNC websocket carries QEMU's RFB stream unchanged in both directions (binary
frames): a VNC client (noVNC, later the web UI) speaks RFB through it. QEMU's
VNC listens only on a 0600 unix socket in the VM's runtime folder, so this
authorised proxy is the only way to the screen.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query, Request, Response, WebSocket
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hangar.api.auth import OPERATE, READ, Access, Level, authorize_ws
from hangar.api.console import CLOSE_BASE, pump
from hangar.api.deps import platform_of
from hangar.api.sessions import sessions_of
from hangar.errors import HangarError
from hangar.services.guests import ExecResult, GuestInfo
from hangar.services.vms import VMView

router = APIRouter(prefix="/1.0/vms", tags=["guests"])


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1, max_length=4096)
    # Standard input for the command, base64 (binary-safe).
    input: str | None = Field(default=None, max_length=16 * 1024 * 1024)
    timeout: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("input")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value.encode("ascii"), validate=True)
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError("input must be base64") from exc
        return value


@router.post("/{name}/exec")
async def exec_in_guest(
    request: Request, name: str, body: ExecRequest, scope: Access = OPERATE
) -> ExecResult:
    """Run a command in the guest through qemu-guest-agent; output and exit code."""
    data = base64.b64decode(body.input) if body.input is not None else None
    return await platform_of(request).guests.exec(
        name, body.command, input_data=data, timeout=body.timeout, project=scope.project
    )


@router.get("/{name}/guest")
async def guest_info(request: Request, name: str, scope: Access = READ) -> GuestInfo:
    """Hostname, OS and IP addresses as the guest agent reports them."""
    return await platform_of(request).guests.info(name, scope.project)


@router.get(
    "/{name}/screenshot",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the guest's screen"}},
)
async def screenshot(request: Request, name: str, scope: Access = OPERATE) -> Response:
    """The guest's screen as a PNG (operators: it may show what the console shows)."""
    png = await platform_of(request).guests.screenshot(name, scope.project)
    return Response(png, media_type="image/png")


@router.post("/{name}/iso/detach")
async def detach_iso(request: Request, name: str, scope: Access = OPERATE) -> VMView:
    """Detach the installer ISO of a stopped VM: it boots from its disk alone."""
    return await platform_of(request).vms.detach_iso(name, scope.project)


@router.websocket("/{name}/vnc")
async def vnc(websocket: WebSocket, name: str, project: str | None = Query(None)) -> None:
    """The VNC (RFB) stream of the guest's display. Operator token or the local socket."""
    await websocket.accept()
    try:
        scope = authorize_ws(websocket, project, Level.OPERATE)
        reader, writer = await platform_of(websocket).guests.open_display(name, scope.project)
    except HangarError as exc:
        await websocket.close(code=CLOSE_BASE + exc.http_status, reason=str(exc)[:120])
        return
    except OSError as exc:
        await websocket.close(code=CLOSE_BASE + 503, reason=f"display not reachable: {exc}")
        return
    with sessions_of(websocket).open(scope) as session:
        await pump(websocket, reader, writer, closed="display closed", session=session, chunk=65536)
