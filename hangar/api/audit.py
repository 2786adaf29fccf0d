"""The audit log (read) and the middleware that writes it.

Every request that changes something (any method but GET/HEAD/OPTIONS) is
recorded after it has been answered: who (token id and name, or the local root),
what (the route's action), which resource (the path, and the name a body gives
what it creates), when, and the result, in the caller's own scope. Refused
requests are recorded too; unauthenticated ones are counted (services/audit.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hangar.api.auth import ADMIN, Access, Caller, authenticate
from hangar.errors import Unauthenticated
from hangar.services.audit import HOST_SCOPE, AuditEntry
from hangar.services.platform import Platform

router = APIRouter(prefix="/1.0/audit", tags=["audit"])
log = logging.getLogger(__name__)

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Websockets are audited like changes (a console or VNC session types into the guest),
# except the event stream, which only reads.
READ_ONLY_WEBSOCKETS = {"events"}
# hangard refuses a websocket by closing it with 4000 + the HTTP status (api/console.py).
CLOSE_BASE = 4000


@router.get("")
async def list_audit(
    request: Request,
    limit: int = Query(100, ge=1, le=10000, description="newest entries to return"),
    scope: Access = ADMIN,
) -> list[AuditEntry]:
    platform: Platform = request.app.state.platform
    return platform.audit.list(scope.filter, limit)


# The largest request body whose JSON "name" the audit entry names (it is the body
# the route itself reads: the middleware only keeps a copy of what went by).
NAMED_BODY_MAX = 64 * 1024


class AuditMiddleware:
    def __init__(self, app: ASGIApp, platform: Platform):
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500
        scope.setdefault("state", {})
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        async def seen() -> Message:
            # What the route reads, a bounded copy kept for the entry's name.
            message = await receive()
            if message["type"] == "http.request" and len(body) <= NAMED_BODY_MAX:
                body.extend(message.get("body", b"")[: NAMED_BODY_MAX + 1 - len(body)])
            return message

        try:
            await self.app(scope, seen, capture)
        finally:
            self._record(scope, status, bytes(body))

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record a console or VNC session once it is decided: refused (hangard closes it
        with 4xxx before any data: that status), or open (data went either way: 101),
        so an entry shows who is on a console while they still are."""
        scope.setdefault("state", {})
        recorded = False

        def decide(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            endpoint = scope.get("endpoint")
            if endpoint is None:  # no route: Starlette closes it (1000) unanswered
                self._record(scope, 404, b"")
            elif getattr(endpoint, "__name__", None) not in READ_ONLY_WEBSOCKETS:
                self._record(scope, status, b"")

        async def capture(message: Message) -> None:
            if message["type"] == "websocket.send":
                decide(101)
            elif message["type"] == "websocket.close":
                code = int(message.get("code", 1000))
                decide(code - CLOSE_BASE if CLOSE_BASE <= code < CLOSE_BASE + 1000 else 101)
            await send(message)

        async def seen() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                decide(101)
            return message

        try:
            await self.app(scope, seen, capture)
        finally:
            decide(101)  # the client left first (or the route ended without a close)

    def _record(self, scope: Scope, status: int, body: bytes) -> None:
        state: dict[str, Any] = scope.get("state", {})
        caller: Caller | None = state.get("caller")
        try:
            if caller is None:
                caller = _identify(scope)
            if caller is None:
                client = scope.get("client")
                self.platform.audit.unauthenticated(str(client[0]) if client else "local")
                return
            endpoint = scope.get("endpoint")
            method = scope.get("method", "WEBSOCKET")
            action = getattr(endpoint, "__name__", None) or f"{method} (no route)"
            resource = f"{method} {scope['path']}"
            named = _body_name(body)
            if named:
                resource += f" name={named}"
            # The caller's own scope: a token's project even when it was refused in
            # another one; the project the host administrator acted in.
            project = caller.project or str(state.get("project") or HOST_SCOPE)
            self.platform.audit.record(
                project=project,
                actor_id=caller.id,
                actor_name=caller.name,
                action=action,
                resource=resource,
                status=status,
            )
        except Exception:  # auditing must never turn an answer into a 500
            log.exception("could not write the audit entry for %s", scope["path"])


def _identify(scope: Scope) -> Caller | None:
    """The caller of a request no route authenticated (none matched its path, or its
    parameters were refused first), if its token is valid: it is recorded as who it is,
    in its own scope, not counted as unauthenticated noise."""
    try:
        return authenticate(HTTPConnection(scope))
    except Unauthenticated:
        return None


def _body_name(body: bytes) -> str | None:
    """The ``name`` (or ``template``) a JSON request body gives the resource it makes."""
    if not body or len(body) > NAMED_BODY_MAX:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key in ("name", "template"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:100]
    return None
