"""hangard's REST API (FastAPI). Routes stay thin: they call the services layer.

Every route authenticates (see :mod:`hangar.api.auth`): the local socket is the host
administrator, TCP callers need a bearer token. Changes are written to the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hangar import __version__
from hangar.api import (
    audit,
    console,
    events,
    guests,
    images,
    logs,
    networks,
    operations,
    projects,
    snapshots,
    storage,
    tokens,
    vms,
    volumes,
)
from hangar.api.auth import READ, Access
from hangar.api.guard import GuardMiddleware
from hangar.api.sessions import Sessions
from hangar.errors import HangarError
from hangar.services.platform import Platform


class ErrorBody(BaseModel):
    error: str
    message: str
    hint: str
    # What the caller can do next (hangar.errors.Action), for a client to phrase in its
    # own words; its parameters are in details. null when there is none.
    action: str | None = None
    details: dict[str, Any]


class WhoAmI(BaseModel):
    id: str
    name: str
    role: str
    project: str
    host_admin: bool


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "invalid input"),
        (401, "no token, or an unknown one"),
        (403, "the token's role does not allow this"),
        (404, "not found (or in another project)"),
        (409, "conflict with the current state"),
        (422, "over a quota or a host limit"),
        (500, "something failed halfway; hangar reverted what it could"),
    )
}


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        yield
        await platform.stop()

    app = FastAPI(
        title="hangar",
        version=__version__,
        description="Virtual machines on QEMU. All errors are JSON: "
        "{error, message, hint, action, details}. Over TCP every request needs "
        "'Authorization: Bearer <token>'; `?project=` picks the project (default: the "
        "token's). Two websockets (not expressible in OpenAPI) take the same header and "
        "query: `/1.0/vms/{name}/console` (raw serial bytes both ways; operator or admin) "
        "and `/1.0/events?type=lifecycle,network,operation,audit` (one JSON event per message, "
        "the first of type `subscribed`). A refused websocket closes with code 4000 + "
        "the HTTP status (4401, 4403, 4404, 4409) and the reason.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.platform = platform
    app.state.sessions = Sessions()  # open websockets and followed logs (revocation ends them)
    # Inside the audit middleware (added last, so outermost), which records its 401s.
    app.add_middleware(GuardMiddleware)
    app.add_middleware(audit.AuditMiddleware, platform=platform)

    @app.exception_handler(HangarError)
    async def hangar_error(request: Request, exc: HangarError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(
            status_code=400,
            content={
                "error": "invalid-input",
                "message": "invalid request: " + "; ".join(problems),
                "hint": "see /openapi.json for the request format",
                "action": None,
                "details": {"errors": problems},
            },
        )

    @app.get("/1.0/host", tags=["host"])
    async def host_info(_: Access = READ) -> dict[str, Any]:
        facts = asdict(platform.host)
        facts["hangar_version"] = __version__
        return facts

    @app.get("/1.0/whoami", tags=["host"])
    async def whoami(scope: Access = READ) -> WhoAmI:
        """Who the server takes the caller for: the token (or the local root) and project."""
        caller = scope.caller
        return WhoAmI(
            id=caller.id,
            name=caller.name,
            role=caller.role,
            project=scope.project,
            host_admin=caller.local,
        )

    for module in (
        vms,
        logs,
        console,
        guests,
        storage,
        snapshots,
        images,
        volumes,
        projects,
        tokens,
        operations,
        events,
        audit,
        networks,
    ):
        app.include_router(module.router)
    return app
