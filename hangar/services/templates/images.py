"""Image use cases: list installed images, build one from its recipe."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from hangar.errors import NotFound
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.storage.images import ImageManifest, ImageStore, Recipe
from hangar.state.projects import ProjectRepository


def known_recipes() -> dict[str, Recipe]:
    from hangar.services.storage.debian import DebianRecipe
    from hangar.services.storage.tiny import TinyRecipe

    return {"tiny": TinyRecipe(), "debian-12": DebianRecipe()}


class BuildResult(BaseModel):
    image: ImageManifest
    built: bool
    log: list[str]


class ImageService:
    def __init__(
        self,
        paths: Paths,
        store: ImageStore,
        runner: CommandRunner,
        recipes: Mapping[str, Recipe] | None = None,
        projects: ProjectRepository | None = None,
    ):
        self.paths = paths
        # To check that a project a template is given to exists.
        self.projects = projects
        self.store = store
        self.runner = runner
        # Injectable so tests can build (and cancel) without downloading packages.
        self.recipes = recipes
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def list(self, project: str | None = None) -> list[ImageManifest]:
        """Images ``project`` may use (None: every one, for the host administrator)."""
        return self.store.list(project)

    def get(self, name: str, project: str | None = None) -> ImageManifest:
        return self.store.get(name, project)

    def share(self, name: str, project: str | None) -> ImageManifest:
        """Give template ``name`` to ``project`` alone, or (None) to every project."""
        image = self.store.get(name)
        if project is not None and self.projects is not None:
            self.projects.get(project)  # NotFound names the projects
        shared = image.model_copy(update={"project": project})
        self.store.write(shared)
        return shared

    def recipe(self, name: str) -> Recipe:
        """The recipe for image ``name``; raises :class:`NotFound` naming the known ones."""
        recipes = self.recipes if self.recipes is not None else known_recipes()
        recipe = recipes.get(name)
        if recipe is None:
            raise NotFound(
                f"no recipe for an image named '{name}'",
                hint=f"hangar can build: {', '.join(sorted(recipes))}",
            )
        return recipe

    async def build(
        self,
        name: str,
        *,
        force: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> BuildResult:
        """Build image ``name`` from its recipe unless it is up to date (or ``force``).

        ``progress`` gets each log line (in the build thread); if it raises, the build
        stops there and its temporary folder is removed (the store is left as it was).
        """
        recipe = self.recipe(name)
        log: list[str] = []

        def step(line: str) -> None:
            log.append(line)
            if progress is not None:
                progress(line)

        async with self._locks[name]:
            manifest, built = await asyncio.to_thread(
                self.store.build, recipe, self.paths.cache, self.runner, step, force=force
            )
        return BuildResult(image=manifest, built=built, log=log)
