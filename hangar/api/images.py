"""Image routes. Images the host administrator builds, imports or publishes are shared
by every project; a fork's template belongs to its project alone (others get 404) until
the host administrator shares it. Only the host administrator builds images.
A build is an operation (202): poll ``/1.0/operations/{id}`` or cancel it with DELETE."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hangar.api.auth import HOST, READ, Access
from hangar.api.deps import platform_of
from hangar.services.operations import Operation, OperationView
from hangar.services.templates.images import BuildResult
from hangar.spec.image import ImageManifest

router = APIRouter(prefix="/1.0/images", tags=["images"])


class ImageBuild(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    force: bool = False


@router.get("")
async def list_images(request: Request, scope: Access = READ) -> list[ImageManifest]:
    """The images and templates the project may use: shared ones and its own."""
    return platform_of(request).images.list(scope.filter)


@router.get("/{name}")
async def get_image(request: Request, name: str, scope: Access = READ) -> ImageManifest:
    return platform_of(request).images.get(name, scope.filter)


class ImageShare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The one project that may use the template; null: every project.
    project: str | None = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")


@router.patch("/{name}")
async def share_image(
    request: Request, name: str, body: ImageShare, _: Access = HOST
) -> ImageManifest:
    """Give a template to one project, or (null) share it with every project."""
    return platform_of(request).images.share(name, body.project)


@router.post("", status_code=202)
async def build_image(request: Request, body: ImageBuild, scope: Access = HOST) -> OperationView:
    platform = platform_of(request)
    recipe = platform.images.recipe(body.name)  # 404 now, not later in the operation
    steps = getattr(recipe, "progress_steps", None)

    async def work(op: Operation) -> BuildResult:
        done = 0

        def progress(line: str) -> None:
            nonlocal done
            done += 1
            percent = min(99.0, 100.0 * done / steps) if steps else None
            op.progress(line, percent=percent)

        op.checkpoint()
        return await platform.images.build(body.name, force=body.force, progress=progress)

    op = platform.operations.start(scope.project, "image-build", f"build image '{body.name}'", work)
    return op.view
