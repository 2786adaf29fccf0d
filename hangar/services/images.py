"""Image use cases: list installed images, build one from its recipe."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from pydantic import BaseModel

from hangar.errors import NotFound
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.storage.images import ImageManifest, ImageStore, Recipe


def known_recipes() -> dict[str, Recipe]:
    from hangar.services.storage.tiny import TinyRecipe

    return {"tiny": TinyRecipe()}


class BuildResult(BaseModel):
    image: ImageManifest
    built: bool
    log: list[str]


class ImageService:
    def __init__(self, paths: Paths, store: ImageStore, runner: CommandRunner):
        self.paths = paths
        self.store = store
        self.runner = runner
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def list(self) -> list[ImageManifest]:
        return self.store.list()

    def get(self, name: str) -> ImageManifest:
        return self.store.get(name)

    async def build(self, name: str, *, force: bool = False) -> BuildResult:
        """Build image ``name`` from its recipe unless it is up to date (or ``force``)."""
        recipes = known_recipes()
        recipe = recipes.get(name)
        if recipe is None:
            raise NotFound(
                f"no recipe for an image named '{name}'",
                hint=f"hangar can build: {', '.join(sorted(recipes))}",
            )
        log: list[str] = []
        async with self._locks[name]:
            manifest, built = await asyncio.to_thread(
                self.store.build, recipe, self.paths.cache, self.runner, log.append, force=force
            )
        return BuildResult(image=manifest, built=built, log=log)
