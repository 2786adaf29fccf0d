"""VM routes: /1.0/vms."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from hangar.api.auth import OPERATE, READ, Access
from hangar.api.deps import platform_of
from hangar.errors import Forbidden
from hangar.services.templates.service import MAX_LAUNCH
from hangar.services.vms import DEFAULT_STOP_TIMEOUT, StopResult, VMView
from hangar.spec.vm import VMCreate

router = APIRouter(prefix="/1.0/vms", tags=["vms"])


class Launch(VMCreate):
    """A VMCreate plus whether to start it at once, whether its disk is a full copy, and
    whether to boot a warm template instead of resuming its saved guest."""

    start: bool = True
    full: bool = False
    cold: bool = False


class LaunchMany(Launch):
    """A Launch of ``count`` VMs, named NAME-1 … NAME-N (one: NAME)."""

    count: int = Field(ge=1, le=MAX_LAUNCH)


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False
    timeout: float = Field(default=DEFAULT_STOP_TIMEOUT, gt=0, le=3600)


_VIEWS = TypeAdapter(list[VMView])


@router.get("", response_model=list[VMView])
async def list_vms(
    request: Request,
    all_projects: bool = Query(
        False, description="every project's VMs (the host administrator; a token sees its own)"
    ),
    scope: Access = READ,
) -> Response:
    # Serialised here: FastAPI would validate every view again before dumping it,
    # which is most of the time of a list of 1,000 VMs.
    project = None if all_projects and scope.caller.local else scope.project
    views = await platform_of(request).vms.list(project)
    return Response(_VIEWS.dump_json(views), media_type="application/json")


def _spec(body: Launch, scope: Access) -> VMCreate:
    spec = VMCreate.model_validate(body.model_dump(exclude={"start", "full", "cold", "count"}))
    if spec.iso is not None and not scope.caller.local:
        # A host path handed to QEMU would let a token read any file on the host.
        raise Forbidden(
            "only the host administrator may attach a host file as an ISO",
            hint="launch ISO installs on the host, through the local socket",
        )
    return spec


@router.post("", status_code=201)
async def create_vm(request: Request, body: Launch, scope: Access = OPERATE) -> VMView:
    return await platform_of(request).templates.launch(
        _spec(body, scope), start=body.start, full=body.full, cold=body.cold, project=scope.project
    )


@router.post("/batch", status_code=201, response_model=list[VMView])
async def create_vms(request: Request, body: LaunchMany, scope: Access = OPERATE) -> Response:
    """``count`` VMs launched as one would be, one after the other. A failure stops
    there: the VMs made before it stay, and its error names them (details.launched)."""
    views = await platform_of(request).templates.launch_many(
        _spec(body, scope),
        body.count,
        start=body.start,
        full=body.full,
        cold=body.cold,
        project=scope.project,
    )
    return Response(_VIEWS.dump_json(views), status_code=201, media_type="application/json")


@router.get("/{name}")
async def get_vm(request: Request, name: str, scope: Access = READ) -> VMView:
    return await platform_of(request).vms.get(name, scope.project)


@router.delete("/{name}", status_code=204)
async def delete_vm(
    request: Request, name: str, force: bool = Query(False), scope: Access = OPERATE
) -> Response:
    await platform_of(request).vms.delete(name, force=force, project=scope.project)
    return Response(status_code=204)


@router.post("/{name}/start")
async def start_vm(request: Request, name: str, scope: Access = OPERATE) -> VMView:
    return await platform_of(request).vms.start(name, scope.project)


@router.post("/{name}/stop")
async def stop_vm(
    request: Request, name: str, body: StopRequest | None = None, scope: Access = OPERATE
) -> StopResult:
    body = body or StopRequest()
    return await platform_of(request).vms.stop(
        name, force=body.force, timeout=body.timeout, project=scope.project
    )


@router.post("/{name}/restart")
async def restart_vm(
    request: Request, name: str, body: StopRequest | None = None, scope: Access = OPERATE
) -> StopResult:
    body = body or StopRequest()
    return await platform_of(request).vms.restart(
        name, force=body.force, timeout=body.timeout, project=scope.project
    )


class NicAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str
    ip: str | None = None


@router.post("/{name}/nics")
async def attach_nic(
    request: Request, name: str, body: NicAttach, scope: Access = OPERATE
) -> VMView:
    """Attach a NIC on a network of the VM's project to a stopped VM (microvm has no
    hotplug)."""
    return await platform_of(request).vms.attach_nic(
        name, body.network, body.ip, project=scope.project
    )


@router.delete("/{name}/nics/{network}")
async def detach_nic(request: Request, name: str, network: str, scope: Access = OPERATE) -> VMView:
    return await platform_of(request).vms.detach_nic(name, network, project=scope.project)


@router.post("/{name}/pause")
async def pause_vm(request: Request, name: str, scope: Access = OPERATE) -> VMView:
    return await platform_of(request).vms.pause(name, scope.project)


@router.post("/{name}/resume")
async def resume_vm(request: Request, name: str, scope: Access = OPERATE) -> VMView:
    return await platform_of(request).vms.resume(name, scope.project)
