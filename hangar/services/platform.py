"""Everything one hangard runs on, wired together once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.host.facts import HostFacts
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.clones import CloneService
from hangar.services.images import ImageService
from hangar.services.storage.images import ImageStore
from hangar.services.transfer import TransferService, max_virtual_size_from_env
from hangar.services.vms import VMService
from hangar.services.volumes import StorageService
from hangar.state.db import Database
from hangar.state.vms import VMRepository
from hangar.state.volumes import PoolRepository, VolumeRepository


@dataclass
class Platform:
    paths: Paths
    host: HostFacts
    db: Database
    images: ImageService
    vms: VMService
    transfer: TransferService
    clones: CloneService
    storage: StorageService

    @classmethod
    def open(cls, paths: Paths, host: HostFacts, runner: CommandRunner) -> Platform:
        paths.ensure()
        db = Database(paths.database)
        store = ImageStore(paths.images)
        vms = VMService(paths, VMRepository(db), store, host, runner)
        return cls(
            paths=paths,
            host=host,
            db=db,
            images=ImageService(paths, store, runner),
            vms=vms,
            transfer=TransferService(
                store, vms, runner, max_virtual_size=max_virtual_size_from_env()
            ),
            clones=CloneService(vms, store, runner),
            storage=StorageService(paths, PoolRepository(db), VolumeRepository(db), vms, runner),
        )

    async def start(self) -> None:
        # Interrupted imports, builds and publishes leave hidden folders: remove them.
        self.images.store.sweep()
        self.storage.ensure_default_pool()
        await self.vms.reconcile()

    async def stop(self) -> None:
        await self.vms.shutdown()
        self.db.close()
