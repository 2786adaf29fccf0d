"""Pools, volumes and disk growth: /1.0/storage/pools, /1.0/volumes, /1.0/vms/{name}/resize.

Pools are folders on the host, shared by every project: anyone may list them, only
the host administrator adds or removes one. Volumes belong to a project; an operator
creates, grows, attaches and deletes them, within the project's disk quota.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from hangar.api.auth import HOST, OPERATE, READ, Access
from hangar.api.deps import platform_of
from hangar.services.vms import VMView
from hangar.services.volumes import DEFAULT_POOL, PoolView, VolumeView
from hangar.spec.vm import Size

router = APIRouter(tags=["storage"])


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str


class VolumeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    size: Size
    pool: str = DEFAULT_POOL
    format: Literal["qcow2", "raw"] = "qcow2"


class SizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: Size


class VMRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vm: str


@router.get("/1.0/storage/pools")
async def list_pools(request: Request, _: Access = READ) -> list[PoolView]:
    return platform_of(request).storage.list_pools()


@router.post("/1.0/storage/pools", status_code=201)
async def create_pool(request: Request, body: PoolCreate, _: Access = HOST) -> PoolView:
    return await platform_of(request).storage.create_pool(body.name, body.path)


@router.delete("/1.0/storage/pools/{name}", status_code=204)
async def delete_pool(request: Request, name: str, _: Access = HOST) -> Response:
    await platform_of(request).storage.delete_pool(name)
    return Response(status_code=204)


@router.get("/1.0/volumes")
async def list_volumes(request: Request, scope: Access = READ) -> list[VolumeView]:
    return platform_of(request).storage.list_volumes(scope.project)


@router.post("/1.0/volumes", status_code=201)
async def create_volume(
    request: Request, body: VolumeCreate, scope: Access = OPERATE
) -> VolumeView:
    return await platform_of(request).storage.create_volume(
        body.name, body.size, pool=body.pool, fmt=body.format, project=scope.project
    )


@router.get("/1.0/volumes/{name}")
async def get_volume(request: Request, name: str, scope: Access = READ) -> VolumeView:
    return platform_of(request).storage.get_volume(name, scope.project)


@router.delete("/1.0/volumes/{name}", status_code=204)
async def delete_volume(request: Request, name: str, scope: Access = OPERATE) -> Response:
    await platform_of(request).storage.delete_volume(name, scope.project)
    return Response(status_code=204)


@router.post("/1.0/volumes/{name}/resize")
async def resize_volume(
    request: Request, name: str, body: SizeBody, scope: Access = OPERATE
) -> VolumeView:
    return await platform_of(request).storage.resize_volume(name, body.size, scope.project)


@router.post("/1.0/volumes/{name}/attach")
async def attach_volume(
    request: Request, name: str, body: VMRef, scope: Access = OPERATE
) -> VolumeView:
    return await platform_of(request).storage.attach(name, body.vm, scope.project)


@router.post("/1.0/volumes/{name}/detach")
async def detach_volume(
    request: Request, name: str, body: VMRef, scope: Access = OPERATE
) -> VolumeView:
    return await platform_of(request).storage.detach(name, body.vm, scope.project)


@router.post("/1.0/vms/{name}/resize")
async def resize_vm(request: Request, name: str, body: SizeBody, scope: Access = OPERATE) -> VMView:
    """Grow the VM's root disk (online with QMP block_resize when it runs)."""
    return await platform_of(request).storage.resize_vm_disk(name, body.size, scope.project)
