"""Project routes: tenants and their quotas.

The host administrator creates and deletes projects and sets their quotas (a project
admin lifting its own limits would make them meaningless); a token reads only its own
project."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hangar.api.auth import HOST, READ, Access, Level, authenticate, authorize
from hangar.api.deps import platform_of
from hangar.api.sessions import sessions_of
from hangar.errors import Forbidden, NextStep
from hangar.services.projects import ProjectView, Quotas

router = APIRouter(prefix="/1.0/projects", tags=["projects"])

NAME_PATH = Path(pattern=r"^[a-z][a-z0-9-]{0,62}$")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    description: str = Field(default="", max_length=500)
    # Limits left out get the defaults (hangar.services.projects.DEFAULT_QUOTAS); null: none.
    quotas: Quotas = Field(default_factory=Quotas)


class QuotaUpdate(Quotas):
    """Only the limits named are changed; null removes a limit."""


@router.get("")
async def list_projects(request: Request, scope: Access = READ) -> list[ProjectView]:
    caller = scope.caller
    return platform_of(request).projects.list(None if caller.local else caller.project)


@router.post("", status_code=201)
async def create_project(request: Request, body: ProjectCreate, _: Access = HOST) -> ProjectView:
    quotas = body.quotas.model_dump(exclude_unset=True)
    return platform_of(request).projects.create(body.name, body.description, quotas)


@router.get("/{name}")
async def get_project(request: Request, name: str = NAME_PATH) -> ProjectView:
    authorize(request, authenticate(request), name, Level.READ)
    return platform_of(request).projects.get(name)


@router.patch("/{name}")
async def set_quotas(request: Request, body: QuotaUpdate, name: str = NAME_PATH) -> ProjectView:
    """Change quotas (host administrator): 404 for another project's token, 403 for its own."""
    _host_only(request, name, "change a project's quotas", NextStep.RAISE_QUOTA)
    return platform_of(request).projects.set_quotas(name, body.model_dump(exclude_unset=True))


class Uplinks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Host interfaces (bridges for bridged networks, a nat network's way out).
    uplinks: tuple[str, ...] = Field(max_length=64)


@router.get("/{name}/uplinks")
async def get_uplinks(request: Request, name: str = NAME_PATH) -> Uplinks:
    """The host interfaces this project's networks may use as uplinks."""
    authorize(request, authenticate(request), name, Level.READ)
    return Uplinks(uplinks=platform_of(request).projects.uplinks(name))


@router.put("/{name}/uplinks")
async def set_uplinks(request: Request, body: Uplinks, name: str = NAME_PATH) -> Uplinks:
    """Allow exactly these host interfaces as this project's uplinks (host administrator)."""
    _host_only(request, name, "allow uplinks", NextStep.SET_UPLINKS)
    return Uplinks(uplinks=platform_of(request).projects.set_uplinks(name, body.uplinks))


@router.delete("/{name}", status_code=204)
async def delete_project(request: Request, name: str = NAME_PATH) -> Response:
    _host_only(request, name, "delete a project", NextStep.DELETE_PROJECT)
    platform_of(request).projects.delete(name)
    sessions_of(request).end_project(name)  # its tokens went with it
    return Response(status_code=204)


def _host_only(request: Request, name: str, doing: str, action: NextStep) -> None:
    """Let only the host administrator on: 404 for another project's token (as if it
    did not exist), 403 for the project's own tokens."""
    caller = authenticate(request)
    authorize(request, caller, name, Level.READ)
    if not caller.local:
        raise Forbidden(
            f"only the host administrator may {doing}",
            hint="ask the host administrator to do it on the host",
            details={"project": name},
            action=action,
        )
