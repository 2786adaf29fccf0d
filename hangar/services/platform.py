"""Everything one hangard runs on, wired together once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from hangar.host.facts import HostFacts
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.images import ImageService
from hangar.services.networks import NetworkService
from hangar.services.storage.images import ImageStore
from hangar.services.vms import VMService
from hangar.state.db import Database
from hangar.state.networks import NetworkRepository
from hangar.state.vms import VMRepository


@dataclass
class Platform:
    paths: Paths
    host: HostFacts
    db: Database
    images: ImageService
    vms: VMService
    networks: NetworkService

    @classmethod
    def open(cls, paths: Paths, host: HostFacts, runner: CommandRunner) -> Platform:
        paths.ensure()
        db = Database(paths.database)
        store = ImageStore(paths.images)
        vm_repo = VMRepository(db)
        networks = NetworkService(paths, NetworkRepository(db), vm_repo, runner)
        return cls(
            paths=paths,
            host=host,
            db=db,
            images=ImageService(paths, store, runner),
            vms=VMService(paths, vm_repo, store, host, runner, networks),
            networks=networks,
        )

    async def start(self) -> None:
        # Networks first: adopted VMs keep their taps, stopped ones get them back.
        await self.networks.restore()
        await self.vms.reconcile()

    async def stop(self) -> None:
        await self.vms.shutdown()
        self.db.close()
