"""Admitting VMs into their project's quotas by revision, not by a lock.

Each project has a usage record in the store (``quota/<project>``). Admitting a
VM reads it, adds what the project's rows use (the repositories stay the truth
for VMs that exist) and what VMs admitted but not yet written there ask, checks
the limits, and commits the record with this VM's reservation added only if the
record is still at the revision it read. Two launches racing for the last slot
both read revision R; one commits R → R+1, the other's compare fails and it
reads again, now seeing the first one's reservation. Nothing holds a lock from
the check to the insert, so an etcd store admits the same way across hosts.

Read order matters: the record first, then the rows. A launch whose row appears
in between wrote its reservation before (so it is counted once: by id, a row
beats its reservation), and a reservation written after the read moves the
record's revision, so the commit fails and the admission reads again.

A reservation lasts from the admission until the VM's row arrives in its project
(this service listens to the VM repository) or the launch fails (the caller runs
the release it got back). Reservations are tagged with the admitting process: one
left by an earlier hangard (crashed mid-launch) counts no more and is dropped at
the next write. A cluster would tie them to the admitting host's etcd lease.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from hangar.errors import Conflict
from hangar.services.projects import ProjectService, Usage, vm_ask
from hangar.spec.vm import VMConfig
from hangar.state.store import Compare, RevisionConflict, Store, Typed, Versioned
from hangar.state.vms import VMRecord, VMRepository

log = logging.getLogger(__name__)

# Admissions racing in one project each retry at most this often; every failed
# compare means another admission got in, so this bounds contention, not waiting.
RETRIES = 16

Release = Callable[[], Awaitable[None]]


class Reservation(BaseModel):
    owner: str
    ask: Usage


class UsageRecord(BaseModel):
    # What the project used once the last admission was in (rows and reservations).
    usage: Usage
    # By VM id: admitted VMs whose row may not be in the project yet.
    pending: dict[str, Reservation] = {}


def _plus(*uses: Usage) -> Usage:
    return Usage(
        instances=sum(u.instances for u in uses),
        cpus=sum(u.cpus for u in uses),
        memory=sum(u.memory for u in uses),
        disk=sum(u.disk for u in uses),
    )


class QuotaService:
    def __init__(self, store: Store, projects: ProjectService, vms: VMRepository):
        self.records = Typed(store, "quota/", UsageRecord)
        self.projects = projects
        # This process's reservations not yet settled: VM id -> (project, ask).
        self._inflight: dict[str, tuple[str, Usage]] = {}
        self.owner = uuid.uuid4().hex
        vms.listeners.append(self._settle)

    def _settle(self, before: VMRecord | None, after: VMRecord | None) -> None:
        # The row is in the project: it counts from now on, its reservation no more.
        if after is not None and self._inflight.get(after.id, ("",))[0] == after.project:
            del self._inflight[after.id]

    def _counts(self, project: str, vm_id: str, reservation: Reservation, rows: set[str]) -> bool:
        if vm_id in rows:
            return False
        if reservation.owner != self.owner:
            return False  # an earlier hangard's, whose launch died with it
        return self._inflight.get(vm_id, ("",))[0] == project

    async def admit(self, project: str, config: VMConfig) -> Release:
        """Admit VM ``config`` into ``project`` or raise :class:`QuotaExceeded` (as
        :meth:`ProjectService.check_fits` words it). Returns the release to run if
        the launch fails before its row is in the project."""
        ask = vm_ask(config)
        vm_id = config.id
        for _ in range(RETRIES):
            item = await self.records.get(project)
            use, rows = self.projects.usage_and_ids(project)
            pending = {
                i: r
                for i, r in (item.value.pending if item else {}).items()
                if self._counts(project, i, r, rows)
            }
            use = _plus(use, *(r.ask for r in pending.values()))
            self.projects.check_fits(project, use, ask)
            pending[vm_id] = Reservation(owner=self.owner, ask=ask)
            record = UsageRecord(usage=_plus(use, ask), pending=pending)
            # Counted before the commit: another admission may read the record while
            # this one awaits the store.
            self._inflight[vm_id] = (project, ask)
            try:
                await self._write(project, item, record)
            except BaseException as exc:
                self._inflight.pop(vm_id, None)
                if isinstance(exc, RevisionConflict):
                    continue  # another admission got in first: read again
                raise
            return lambda: self.release(project, vm_id)
        raise Conflict(
            f"too many launches in project '{project}' at once",
            hint="try again",
            details={"project": project},
        )

    async def _write(
        self, project: str, item: Versioned[UsageRecord] | None, record: UsageRecord
    ) -> None:
        await self.records.store.commit(
            [Compare(self.records.key(project), item.mod_revision if item else 0)],
            [self.records.put_op(project, record)],
        )

    async def release(self, project: str, vm_id: str) -> None:
        """Give back ``vm_id``'s reservation (its launch failed)."""
        if self._inflight.pop(vm_id, None) is None:
            return
        # The reservation no longer counts (it is not in flight); dropping it from the
        # record is tidiness, so a conflict is left to the next admission's write.
        item = await self.records.get(project)
        if item is None or vm_id not in item.value.pending:
            return
        pending = {i: r for i, r in item.value.pending.items() if i != vm_id}
        use, gone = item.value.usage, item.value.pending[vm_id].ask
        usage = Usage(
            instances=use.instances - gone.instances,
            cpus=use.cpus - gone.cpus,
            memory=use.memory - gone.memory,
            disk=use.disk - gone.disk,
        )
        try:
            await self._write(project, item, UsageRecord(usage=usage, pending=pending))
        except RevisionConflict:
            log.debug("quota of %s: reservation of %s left to the next write", project, vm_id)

    def check_disk(self, project: str, extra: int) -> None:
        """:meth:`ProjectService.check_disk_quota`, counting the disks of VMs admitted
        here but not yet in their project (a volume and a launch both take disk)."""
        pending = sum(ask.disk for p, ask in self._inflight.values() if p == project)
        self.projects.check_disk_quota(project, extra, pending)
