"""The "debian-12" cloud image: debootstrap, cloud-init, qemu-guest-agent, three boot paths."""

from hangar.services.storage.debian.recipe import DebianRecipe

__all__ = ["DebianRecipe"]
