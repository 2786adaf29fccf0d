"""Projects (tenants): creation, deletion, quotas, and the quota check at launch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hangar.errors import Conflict, NextStep, QuotaExceeded
from hangar.names import check_interface, check_project
from hangar.spec.units import format_size
from hangar.spec.vm import VMConfig
from hangar.state.networks import NetworkRepository
from hangar.state.projects import ProjectRecord, ProjectRepository
from hangar.state.vms import DEFAULT_PROJECT, VMRepository
from hangar.state.volumes import VolumeRepository


class Quotas(BaseModel):
    """Limits of a project; None means unlimited."""

    model_config = ConfigDict(extra="forbid")

    max_instances: int | None = Field(default=None, ge=0, le=100_000)
    max_cpus: int | None = Field(default=None, ge=0, le=1_000_000)
    max_memory: int | None = Field(default=None, ge=0, le=2**62)
    max_disk: int | None = Field(default=None, ge=0, le=2**62)


# What a project created without quotas gets (a limit left out of a create request takes
# its default too; null there, or 'hangar project set P KEY=none' later, means unlimited).
# Quotas are the host administrator's: only the local socket sets them. The 'default'
# project is the host administrator's own and stays unlimited.
DEFAULT_QUOTAS: dict[str, int | None] = {
    "max_instances": 10,
    "max_cpus": 16,
    "max_memory": 32 * 1024**3,
    "max_disk": 200 * 1024**3,
}


class Usage(BaseModel):
    instances: int
    cpus: int
    memory: int
    disk: int


def vm_ask(config: VMConfig) -> Usage:
    """What one VM of ``config`` counts against its project's quotas."""
    return Usage(instances=1, cpus=config.cpus, memory=config.memory, disk=config.disk_size)


class ProjectView(BaseModel):
    name: str
    description: str
    quotas: Quotas
    usage: Usage
    created_at: str


_LIMITS = (
    ("max_instances", "instances", "instances", str),
    ("max_cpus", "cpus", "vCPUs", str),
    ("max_memory", "memory", "memory", format_size),
    ("max_disk", "disk", "disk", format_size),
)


def check_project_name(name: str) -> None:
    check_project(name)


class ProjectService:
    def __init__(
        self,
        repo: ProjectRepository,
        vms: VMRepository,
        volumes: VolumeRepository,
        networks: NetworkRepository,
    ):
        self.repo = repo
        self.vms = vms
        self.volumes = volumes
        self.networks = networks

    def usage(self, project: str) -> Usage:
        return self.usage_and_ids(project)[0]

    def usage_and_ids(self, project: str) -> tuple[Usage, set[str]]:
        """What ``project``'s rows use, and the ids of its VMs (read together)."""
        records = self.vms.list(project)
        configs = [r.config for r in records]
        usage = Usage(
            instances=len(configs),
            cpus=sum(c.cpus for c in configs),
            memory=sum(c.memory for c in configs),
            # Root disks at their virtual size, plus the project's volumes.
            disk=sum(c.disk_size for c in configs) + self.volumes.total_size(project),
        )
        return usage, {r.id for r in records}

    def view(self, record: ProjectRecord) -> ProjectView:
        return ProjectView(
            name=record.name,
            description=record.description,
            quotas=Quotas(**{k: record.quota(k) for k, *_ in _LIMITS}),
            usage=self.usage(record.name),
            created_at=record.created_at,
        )

    def get(self, name: str) -> ProjectView:
        return self.view(self.repo.get(name))

    def list(self, only: str | None = None) -> list[ProjectView]:
        return [self.view(r) for r in self.repo.list() if only is None or r.name == only]

    def create(
        self, name: str, description: str = "", quotas: dict[str, int | None] | None = None
    ) -> ProjectView:
        """Create ``name``; each limit not in ``quotas`` gets :data:`DEFAULT_QUOTAS`'."""
        check_project_name(name)
        self.repo.insert(name, description)
        self.repo.set_quotas(name, {**DEFAULT_QUOTAS, **(quotas or {})})
        return self.get(name)

    def set_quotas(self, name: str, quotas: dict[str, int | None]) -> ProjectView:
        return self.view(self.repo.set_quotas(name, quotas))

    def uplinks(self, name: str) -> tuple[str, ...]:
        """Host interfaces the host administrator lets ``name``'s networks use."""
        self.repo.get(name)
        return self.repo.uplinks(name)

    def set_uplinks(self, name: str, uplinks: tuple[str, ...]) -> tuple[str, ...]:
        for uplink in uplinks:
            check_interface(uplink)
        return self.repo.set_uplinks(name, uplinks)

    def delete(self, name: str) -> None:
        if name == DEFAULT_PROJECT:
            raise Conflict("the default project cannot be deleted", hint="it always exists")
        self.repo.get(name)
        count = self.vms.count(name)
        if count:
            raise Conflict(
                f"project '{name}' still has {count} VM(s)",
                hint="delete its VMs first",
                details={"project": name, "instances": count},
                action=NextStep.LIST_VMS,
            )
        volumes = len(self.volumes.list(project=name))
        if volumes:
            raise Conflict(
                f"project '{name}' still has {volumes} volume(s)",
                hint="delete its volumes first",
                details={"project": name, "volumes": volumes},
                action=NextStep.LIST_VOLUMES,
            )
        networks = self.networks.count(name)
        if networks:
            raise Conflict(
                f"project '{name}' still has {networks} network(s)",
                hint="delete its networks first",
                details={"project": name, "networks": networks},
                action=NextStep.LIST_NETWORKS,
            )
        self.repo.delete(name)

    def check_quota(self, project: str, config: VMConfig) -> None:
        """Raise :class:`QuotaExceeded` if ``config`` would not fit in ``project``'s
        quotas beside what its rows use (services/quota.py admits launches)."""
        self.check_fits(project, self.usage(project), vm_ask(config))

    def check_fits(self, project: str, use: Usage, asks: Usage) -> None:
        """Raise :class:`QuotaExceeded` naming the limit and the current use if a VM
        asking ``asks`` would not fit in ``project``'s quotas while it uses ``use``."""
        record = self.repo.get(project)
        for key, field, label, fmt in _LIMITS:
            limit = record.quota(key)
            if limit is None:
                continue
            current = int(getattr(use, field))
            asked = int(getattr(asks, field))
            if current + asked > limit:
                raise QuotaExceeded(
                    f"project '{project}' would exceed its {label} quota: limit {fmt(limit)}, "
                    f"in use {fmt(current)}, this VM asks for {fmt(asked)}",
                    hint=f"delete VMs in '{project}' or ask the host administrator to raise "
                    "the limit",
                    action=NextStep.RAISE_QUOTA,
                    details={
                        "project": project,
                        "limit": key,
                        "value": limit,
                        "in_use": current,
                        "requested": asked,
                    },
                )

    def check_disk_quota(self, project: str, extra: int, pending: int = 0) -> None:
        """Raise :class:`QuotaExceeded` if ``project`` cannot take ``extra`` more bytes of
        disk (a new volume, or a disk grown) beside its rows and ``pending`` bytes of
        VMs admitted but not yet in them. Call it under the project's lock."""
        limit = self.repo.get(project).quota("max_disk")
        if limit is None or extra <= 0:
            return
        current = self.usage(project).disk + pending
        if current + extra > limit:
            raise QuotaExceeded(
                f"project '{project}' would exceed its disk quota: limit {format_size(limit)}, "
                f"in use {format_size(current)}, this asks for {format_size(extra)} more",
                hint=f"delete VMs or volumes in '{project}' or ask the host administrator to "
                "raise the limit",
                action=NextStep.RAISE_QUOTA,
                details={
                    "project": project,
                    "limit": "max_disk",
                    "value": limit,
                    "in_use": current,
                    "requested": extra,
                },
            )
