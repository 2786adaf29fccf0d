"""Everything one hangard runs on, wired together once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.host.facts import HostFacts
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.images import ImageService
from hangar.services.storage.images import ImageStore
from hangar.services.vms import VMService
from hangar.state.db import Database
from hangar.state.vms import VMRepository


@dataclass
class Platform:
    paths: Paths
    host: HostFacts
    db: Database
    images: ImageService
    vms: VMService

    @classmethod
    def open(cls, paths: Paths, host: HostFacts, runner: CommandRunner) -> Platform:
        paths.ensure()
        db = Database(paths.database)
        store = ImageStore(paths.images)
        return cls(
            paths=paths,
            host=host,
            db=db,
            images=ImageService(paths, store, runner),
            vms=VMService(paths, VMRepository(db), store, host, runner),
        )

    async def start(self) -> None:
        await self.vms.reconcile()

    async def stop(self) -> None:
        await self.vms.shutdown()
        self.db.close()
