"""A recipe that builds a fake image in steps, slowly if asked: image builds as
operations (progress, cancel) without downloading a single package."""

from __future__ import annotations

import time
from pathlib import Path

from hangar.runner import CommandRunner
from hangar.services.storage.images import ProgressFn
from hangar.spec.image import ImageManifest
from tests.support.factories import tiny_manifest


class FakeRecipe:
    progress_steps = 5

    def __init__(self, name: str = "tiny", *, step_seconds: float = 0.0, digest: str = "fake"):
        self.name = name
        self.step_seconds = step_seconds
        self.digest = digest
        self.started = 0

    def recipe_hash(self, runner: CommandRunner) -> str:
        return self.digest

    def build(
        self, out_dir: Path, cache_dir: Path, runner: CommandRunner, progress: ProgressFn
    ) -> ImageManifest:
        self.started += 1
        for member in ("vmlinux", "initrd.img", "disk.qcow2"):
            (out_dir / member).write_bytes(b"fake " + member.encode())
        for step in range(self.progress_steps):
            time.sleep(self.step_seconds)
            progress(f"step {step + 1} of {self.progress_steps}")
        return tiny_manifest(
            name=self.name, kernel="vmlinux", initrd="initrd.img", disk="disk.qcow2"
        )
