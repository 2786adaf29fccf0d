"""Operation routes: list, show, cancel long-running work."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Query, Request

from hangar.api.auth import OPERATE, READ, Access
from hangar.api.deps import platform_of
from hangar.services.operations import OperationView

router = APIRouter(prefix="/1.0/operations", tags=["operations"])


@router.get("")
async def list_operations(request: Request, scope: Access = READ) -> list[OperationView]:
    return platform_of(request).operations.list(scope.filter)


@router.get("/{op_id}")
async def get_operation(
    request: Request,
    op_id: str,
    wait: float = Query(0, ge=0, le=60, description="seconds to wait for it to finish"),
    scope: Access = READ,
) -> OperationView:
    op = platform_of(request).operations.get(op_id, scope.filter)
    if wait > 0 and not op.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(op.done.wait(), wait)
    return op.view


@router.delete("/{op_id}", status_code=202)
async def cancel_operation(request: Request, op_id: str, scope: Access = OPERATE) -> OperationView:
    return platform_of(request).operations.cancel(op_id, scope.filter).view
