"""The "tiny" guest image: a Debian kernel and a busybox userland, built from .debs."""

from hangar.services.storage.tiny.recipe import TinyRecipe

__all__ = ["TinyRecipe"]
