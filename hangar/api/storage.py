"""Storage routes: image import, export, deletion; VM copies and templates.

Each of these can take minutes, so each is an operation (202): poll
``/1.0/operations/{id}`` for progress (percent as qemu-img or QEMU's backup job
reports it), cancel it with DELETE; a cancelled one leaves nothing behind.

Images and templates the host administrator makes are shared by every project, and
import and export read and write paths on the host: those are the host administrator's
(the local socket). Copies, and a fork's template, stay in the caller's project.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hangar.api.auth import HOST, OPERATE, Access
from hangar.api.deps import platform_of
from hangar.services.operations import Operation, OperationView
from hangar.services.storage.exporter import ExportFormat
from hangar.services.storage.formats import Format
from hangar.services.templates.standby import StandbyView
from hangar.spec.image import MAX_STANDBY
from hangar.spec.vm import Size

router = APIRouter(tags=["storage"])


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    name: str | None = None
    format: Format | None = None
    max_size: Size | None = None


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    format: ExportFormat
    path: str


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    full: bool = False
    start: bool = False


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str
    # Save the running VM's guest (RAM and devices) too: launches resume it.
    warm: bool = False
    # With warm: standby VMs to keep resumed for launches to claim (see StandbyBody).
    standby: int = Field(default=0, ge=0, le=MAX_STANDBY)


class StandbyBody(BaseModel):
    """How many VMs hangard keeps resumed from a warm template, each already a
    distinct machine, for launches to claim: a launch then only renames one."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0, le=MAX_STANDBY)


class ForkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=100)
    # The forks are named PREFIX-1 ... PREFIX-N (default: VM-fork).
    prefix: str | None = None


@router.post("/1.0/images/import", status_code=202)
async def import_image(request: Request, body: ImportBody, scope: Access = HOST) -> OperationView:
    """Import a disk image or OVA from a path on the host, after the safety checks.
    The operation's result is the import's (the image and the steps taken)."""
    platform = platform_of(request)

    async def work(op: Operation) -> BaseModel:
        return await platform.transfer.import_image(
            body.path, name=body.name, fmt=body.format, max_size=body.max_size, progress=op.progress
        )

    what = body.name or body.path
    return platform.operations.start(scope.project, "image-import", f"import {what}", work).view


@router.delete("/1.0/images/{name}", status_code=204)
async def delete_image(request: Request, name: str, scope: Access = OPERATE) -> Response:
    """Delete an image or template: a shared one is the host administrator's; a project's
    own (a fork's template) its operators may delete."""
    await platform_of(request).templates.delete_image(
        name, scope.project, by_host=scope.caller.local
    )
    return Response(status_code=204)


@router.put("/1.0/images/{name}/standby")
async def set_standby(
    request: Request, name: str, body: StandbyBody, _: Access = HOST
) -> StandbyView:
    """Keep COUNT standby VMs of warm template NAME (0: none); they are made in the
    background."""
    return platform_of(request).warm.standby.set_count(name, body.count)


@router.get("/1.0/images/{name}/standby")
async def get_standby(request: Request, name: str, _: Access = HOST) -> StandbyView:
    """How many standby VMs warm template NAME asks for, and which wait for a launch."""
    return platform_of(request).warm.standby.view(name)


@router.post("/1.0/exports", status_code=202)
async def export(request: Request, body: ExportBody, scope: Access = HOST) -> OperationView:
    """Export an image or a VM of the project (a running one from one point in time) to
    a new file on the host."""
    platform = platform_of(request)

    async def work(op: Operation) -> BaseModel:
        return await platform.transfer.export(
            body.source, body.format, body.path, project=scope.project, progress=op.progress
        )

    description = f"export {body.source} as {body.format}"
    return platform.operations.start(scope.project, "export", description, work).view


@router.post("/1.0/vms/{name}/copy", status_code=202)
async def copy_vm(
    request: Request, name: str, body: CopyBody, scope: Access = OPERATE
) -> OperationView:
    """Copy a VM (running or stopped) to a new VM with a new identity, in the same project.
    The operation's result is the new VM."""
    platform = platform_of(request)
    platform.vms.repo.get(name, scope.project)  # 404 now, not later in the operation

    async def work(op: Operation) -> BaseModel:
        return await platform.clones.copy(
            name,
            body.name,
            full=body.full,
            start=body.start,
            project=scope.project,
            progress=op.progress,
        )

    kind = "full" if body.full else "linked"
    description = f"{kind} copy of VM '{name}' to '{body.name}'"
    return platform.operations.start(scope.project, "vm-copy", description, work).view


@router.post("/1.0/vms/{name}/publish", status_code=202)
async def publish_vm(
    request: Request, name: str, body: PublishBody, scope: Access = HOST
) -> OperationView:
    """Capture a stopped VM as a generalized template (an image VMs of every project
    launch from). The operation's result is the template's manifest."""
    return (
        platform_of(request)
        .templates.start_publish(
            name, body.template, warm=body.warm, standby=body.standby, project=scope.project
        )
        .view
    )


@router.post("/1.0/vms/{name}/fork", status_code=202)
async def fork_vm(
    request: Request, name: str, body: ForkBody, scope: Access = OPERATE
) -> OperationView:
    """N running copies of a running VM, each resumed from one saved moment of it and
    given its own identity (name, MAC, DHCP lease, machine-id). The result names the
    warm template they are linked clones of, and the VMs."""
    platform = platform_of(request)
    platform.vms.repo.get(name, scope.project)

    async def work(op: Operation) -> BaseModel:
        return await platform.warm.fork(
            name, body.count, prefix=body.prefix, project=scope.project, progress=op.progress
        )

    description = f"fork VM '{name}' {body.count} time(s)"
    return platform.operations.start(scope.project, "fork", description, work).view
