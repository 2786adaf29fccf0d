"""Everything one hangard runs on, wired together once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.audit import AuditService
from hangar.services.clones import CloneService
from hangar.services.events import EventBus
from hangar.services.guests import GuestService
from hangar.services.networks import NetworkService
from hangar.services.operations import OperationManager
from hangar.services.projects import ProjectService
from hangar.services.quota import QuotaService
from hangar.services.snapshots.service import SnapshotService
from hangar.services.storage.images import ImageStore
from hangar.services.templates.images import ImageService
from hangar.services.templates.service import TemplateService
from hangar.services.templates.warm import WarmService
from hangar.services.tokens import TokenService
from hangar.services.transfer import TransferService, max_virtual_size_from_env
from hangar.services.vms import VMService
from hangar.services.volumes import StorageService
from hangar.spec.host import HostFacts
from hangar.state.audit import AuditRepository
from hangar.state.db import Database
from hangar.state.networks import NetworkRepository
from hangar.state.projects import ProjectRepository
from hangar.state.snapshots import SnapshotRepository
from hangar.state.sqlite_store import SqliteStore
from hangar.state.vms import VMRecord, VMRepository
from hangar.state.volumes import PoolRepository, VolumeRepository


@dataclass
class Platform:
    paths: Paths
    host: HostFacts
    db: Database
    images: ImageService
    vms: VMService
    networks: NetworkService
    projects: ProjectService
    tokens: TokenService
    audit: AuditService
    events: EventBus
    operations: OperationManager
    transfer: TransferService
    clones: CloneService
    storage: StorageService
    snapshots: SnapshotService
    warm: WarmService
    guests: GuestService
    templates: TemplateService
    _stopped: bool = False
    _housekeeping: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls, paths: Paths, host: HostFacts, runner: CommandRunner, *, sandbox: bool = False
    ) -> Platform:
        paths.ensure()
        db = Database(paths.database)
        store = ImageStore(paths.images)
        vm_repo = VMRepository(db)
        volume_repo = VolumeRepository(db)
        events = EventBus()
        network_repo = NetworkRepository(db)
        project_repo = ProjectRepository(db)
        networks = NetworkService(
            paths,
            network_repo,
            vm_repo,
            runner,
            events,
            uplinks_of=project_repo.uplinks,
            sandbox=sandbox,
        )
        projects = ProjectService(project_repo, vm_repo, volume_repo, network_repo)
        quota = QuotaService(SqliteStore(db), projects, vm_repo)
        vms = VMService(
            paths,
            vm_repo,
            store,
            host,
            runner,
            quota_check=quota.admit,
            networks=networks,
            sandbox=sandbox,
        )
        images = ImageService(paths, store, runner, projects=project_repo)
        operations = OperationManager(events)
        transfer = TransferService(store, vms, runner, max_virtual_size=max_virtual_size_from_env())
        clones = CloneService(vms, store, runner)
        warm = WarmService(vms, store, runner, project_repo)
        platform = cls(
            paths=paths,
            host=host,
            db=db,
            images=images,
            vms=vms,
            networks=networks,
            projects=projects,
            tokens=TokenService(db),
            audit=AuditService(AuditRepository(db), events),
            events=events,
            operations=operations,
            transfer=transfer,
            clones=clones,
            storage=StorageService(
                paths, PoolRepository(db), volume_repo, vms, runner, quota.check_disk
            ),
            snapshots=SnapshotService(vms, SnapshotRepository(db), runner),
            warm=warm,
            guests=GuestService(vms),
            templates=TemplateService(vms, images, transfer, clones, warm, operations),
        )
        vm_repo.listeners.append(platform._vm_changed)
        return platform

    def _vm_changed(self, before: VMRecord | None, after: VMRecord | None) -> None:
        record = after or before
        assert record is not None
        change = "created" if before is None else "deleted" if after is None else "state"
        self.events.publish(
            "lifecycle",
            record.project,
            {
                "change": change,
                "vm": record.name,
                "id": record.id,
                "state": after.state if after else "deleted",
                "previous": before.state if before else None,
                "reason": after.state_reason if after else "",
            },
        )

    async def start(self) -> None:
        self.events.bind(asyncio.get_running_loop())
        # The audit log's retention and noise summaries (services/audit.py).
        self._housekeeping = asyncio.create_task(self.audit.run(), name="audit-housekeeping")
        # Interrupted imports, builds and publishes leave hidden folders: remove them.
        self.images.store.sweep()
        self.storage.ensure_default_pool()
        # Networks first: adopted VMs keep their taps, stopped ones get them back.
        await self.networks.restore()
        await self.vms.reconcile()
        await self.warm.standby.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Cancelled now, awaited last: an await here would let other work run before
        # the VMs are let go of, and the task must be gone before the database closes.
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        self.audit.flush_noise(force=True)
        await self.operations.shutdown()
        await self.warm.standby.stop()
        await self.vms.shutdown()
        if self._housekeeping is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        self.db.close()
