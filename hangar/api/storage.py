"""Storage routes: image import, export, deletion; VM copies and templates."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from hangar.api.deps import platform_of
from hangar.services.storage.exporter import ExportFormat
from hangar.services.storage.formats import Format
from hangar.services.transfer import ExportResult, ImportResult
from hangar.services.vms import VMView
from hangar.spec.image import ImageManifest
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


@router.post("/1.0/images/import", status_code=201)
async def import_image(request: Request, body: ImportBody) -> ImportResult:
    """Import a disk image or OVA from a path on the host, after the safety checks."""
    return await platform_of(request).transfer.import_image(
        body.path, name=body.name, fmt=body.format, max_size=body.max_size
    )


@router.delete("/1.0/images/{name}", status_code=204)
async def delete_image(request: Request, name: str) -> Response:
    await platform_of(request).transfer.delete_image(name)
    return Response(status_code=204)


@router.post("/1.0/exports", status_code=201)
async def export(request: Request, body: ExportBody) -> ExportResult:
    """Export an image or a VM (a running one from one point in time) to a new file."""
    return await platform_of(request).transfer.export(body.source, body.format, body.path)


@router.post("/1.0/vms/{name}/copy", status_code=201)
async def copy_vm(request: Request, name: str, body: CopyBody) -> VMView:
    """Copy a VM (running or stopped) to a new VM with a new identity."""
    return await platform_of(request).clones.copy(name, body.name, full=body.full, start=body.start)


@router.post("/1.0/vms/{name}/publish", status_code=201)
async def publish_vm(request: Request, name: str, body: PublishBody) -> ImageManifest:
    """Capture a stopped VM as a generalized template (an image VMs launch from)."""
    return await platform_of(request).clones.publish(name, body.template)
