"""Snapshot routes: /1.0/vms/{name}/snapshots.

Creating, restoring and deleting can take seconds to minutes (saving or loading
memory, merging layers), so each is an operation (202) whose result is the
snapshot, the VM, or nothing. Snapshots belong to their VM's project.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from hangar.api.auth import OPERATE, READ, Access
from hangar.api.deps import platform_of
from hangar.errors import Conflict
from hangar.names import check_name
from hangar.services.operations import Operation, OperationView
from hangar.services.snapshots.service import SnapshotView

router = APIRouter(prefix="/1.0/vms/{name}/snapshots", tags=["snapshots"])


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    memory: bool = False


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Discard the VM's current state (a running guest, or disk changes since its snapshot).
    force: bool = False


class Deleted(BaseModel):
    deleted: str


@router.get("")
async def list_snapshots(request: Request, name: str, scope: Access = READ) -> list[SnapshotView]:
    """The VM's snapshots in tree order: each names its parent and children."""
    return platform_of(request).snapshots.list(name, scope.project)


@router.get("/{snapshot}")
async def get_snapshot(
    request: Request, name: str, snapshot: str, scope: Access = READ
) -> SnapshotView:
    return platform_of(request).snapshots.get(name, snapshot, scope.project)


@router.post("", status_code=202)
async def create_snapshot(
    request: Request, name: str, body: SnapshotCreate, scope: Access = OPERATE
) -> OperationView:
    """Snapshot the VM's disk, and with ``memory`` its RAM and devices (running VMs;
    they keep running). The operation's result is the snapshot."""
    platform = platform_of(request)
    # Bad input answers now (400, 404, 409), not later in the operation.
    check_name(body.name, what="snapshot name")
    record = platform.vms.repo.get(name, scope.project)
    if platform.snapshots.repo.find(record.id, body.name) is not None:
        raise Conflict(
            f"VM '{name}' already has a snapshot named '{body.name}'",
            hint="pick another name, or delete that snapshot first",
        )

    async def work(op: Operation) -> BaseModel:
        return await platform.snapshots.create(
            name, body.name, memory=body.memory, project=scope.project, progress=op.progress
        )

    kind = "memory" if body.memory else "disk"
    description = f"{kind} snapshot '{body.name}' of VM '{name}'"
    return platform.operations.start(scope.project, "snapshot-create", description, work).view


@router.post("/{snapshot}/restore", status_code=202)
async def restore_snapshot(
    request: Request,
    name: str,
    snapshot: str,
    body: RestoreBody | None = None,
    scope: Access = OPERATE,
) -> OperationView:
    """Bring the VM back to the snapshot (disk, config and, if saved, the running guest).
    Refused without ``force`` when current state would be lost. The result is the VM."""
    platform = platform_of(request)
    record = platform.vms.repo.get(name, scope.project)
    platform.snapshots.repo.get(record.id, snapshot, name)
    force = body.force if body else False

    async def work(op: Operation) -> BaseModel:
        return await platform.snapshots.restore(
            name, snapshot, force=force, project=scope.project, progress=op.progress
        )

    description = f"restore VM '{name}' to snapshot '{snapshot}'"
    return platform.operations.start(scope.project, "snapshot-restore", description, work).view


@router.delete("/{snapshot}", status_code=202)
async def delete_snapshot(
    request: Request, name: str, snapshot: str, scope: Access = OPERATE
) -> OperationView:
    """Delete a snapshot; layers built on it get its data merged in first."""
    platform = platform_of(request)
    record = platform.vms.repo.get(name, scope.project)
    platform.snapshots.repo.get(record.id, snapshot, name)

    async def work(op: Operation) -> BaseModel:
        await platform.snapshots.delete(name, snapshot, project=scope.project, progress=op.progress)
        return Deleted(deleted=snapshot)

    description = f"delete snapshot '{snapshot}' of VM '{name}'"
    return platform.operations.start(scope.project, "snapshot-delete", description, work).view
