"""The audit log (read) and the middleware that writes it.

Every request that changes something (any method but GET/HEAD/OPTIONS) is
recorded after it has been answered: who (token id and name, or the local root),
what (the route's action), which resource (the path), when, and the result.
Refused requests are recorded too, unauthenticated ones included.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hangar.api.auth import ADMIN, Access, Caller
from hangar.services.platform import Platform
from hangar.state.audit import AuditEntry

router = APIRouter(prefix="/1.0/audit", tags=["audit"])
log = logging.getLogger(__name__)

READ_METHODS = {"GET", "HEAD", "OPTIONS"}


@router.get("")
async def list_audit(
    request: Request,
    limit: int = Query(100, ge=1, le=10000, description="newest entries to return"),
    scope: Access = ADMIN,
) -> list[AuditEntry]:
    platform: Platform = request.app.state.platform
    return platform.audit.list(scope.filter, limit)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, platform: Platform):
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500
        scope.setdefault("state", {})

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._record(scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        state: dict[str, Any] = scope.get("state", {})
        caller: Caller | None = state.get("caller")
        endpoint = scope.get("endpoint")
        action = getattr(endpoint, "__name__", None) or f"{scope['method']} (no route)"
        try:
            self.platform.record_audit(
                project=str(state.get("project") or (caller.project if caller else "") or "-"),
                actor_id=caller.id if caller else "-",
                actor_name=caller.name if caller else "unauthenticated",
                action=action,
                resource=f"{scope['method']} {scope['path']}",
                status=status,
            )
        except Exception:  # auditing must never turn an answer into a 500
            log.exception("could not write the audit entry for %s", scope["path"])
