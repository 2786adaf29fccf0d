"""hangard's REST API (FastAPI). Routes stay thin: they call the services layer."""

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
from hangar.api import console, logs, networks, vms
from hangar.errors import HangarError
from hangar.services.images import BuildResult
from hangar.services.platform import Platform
from hangar.spec.image import ImageManifest


class ImageBuild(BaseModel):
    name: str
    force: bool = False


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
        "{error, message, hint, details}.",
        lifespan=lifespan,
    )
    app.state.platform = platform

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
                "details": {"errors": problems},
            },
        )

    @app.get("/1.0/host", tags=["host"])
    async def host_info() -> dict[str, Any]:
        facts = asdict(platform.host)
        facts["hangar_version"] = __version__
        return facts

    @app.get("/1.0/images", tags=["images"])
    async def list_images() -> list[ImageManifest]:
        return platform.images.list()

    @app.get("/1.0/images/{name}", tags=["images"])
    async def get_image(name: str) -> ImageManifest:
        return platform.images.get(name)

    @app.post("/1.0/images", tags=["images"])
    async def build_image(request: ImageBuild) -> BuildResult:
        return await platform.images.build(request.name, force=request.force)

    app.include_router(vms.router)
    app.include_router(logs.router)
    app.include_router(console.router)
    app.include_router(networks.router)
    return app
