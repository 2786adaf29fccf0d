"""Quotas admitted by revision (services/quota.py), over MemoryStore and SqliteStore."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from hangar.errors import Conflict, HostCommandFailed, QuotaExceeded
from hangar.services.projects import ProjectService
from hangar.services.quota import RETRIES, QuotaService
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMConfig, VMCreate
from hangar.state.db import Database
from hangar.state.networks import NetworkRepository
from hangar.state.projects import ProjectRepository
from hangar.state.sqlite_store import SqliteStore
from hangar.state.store import Json, MemoryStore, RevisionConflict, RevisionedStore, Versioned
from hangar.state.vms import VMRepository
from hangar.state.volumes import VolumeRepository
from tests.component.conftest import PlatformFactory
from tests.support.factories import host_facts, tiny_manifest
from tests.support.recording_runner import RecordingRunner

UNLIMITED: dict[str, int | None] = {
    "max_instances": None,
    "max_cpus": None,
    "max_memory": None,
    "max_disk": None,
}


class RacingStore:
    """A store whose first ``readers`` gets wait for each other: the admissions they
    belong to have all read the same revision before any of them commits."""

    def __init__(self, inner: RevisionedStore, readers: int) -> None:
        self.inner = inner
        self.barrier = asyncio.Barrier(readers)
        self.waiting = readers

    async def get(self, key: str) -> Versioned[Json] | None:
        item = await self.inner.get(key)
        if self.waiting > 0:
            self.waiting -= 1
            async with asyncio.timeout(10):
                await self.barrier.wait()
        return item

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@dataclass
class World:
    db: Database
    store: RevisionedStore
    projects: ProjectService
    vms: VMRepository

    def quota(self, racers: int = 0) -> QuotaService:
        store = RacingStore(self.store, racers) if racers else self.store
        return QuotaService(store, self.projects, self.vms)  # type: ignore[arg-type]

    def limit(self, **quotas: int | None) -> None:
        self.projects.set_quotas("alpha", {**UNLIMITED, **quotas})


@pytest.fixture(params=["memory", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    db = Database(tmp_path / "h.db")
    store: RevisionedStore = MemoryStore() if request.param == "memory" else SqliteStore(db)
    vms = VMRepository(db)
    projects = ProjectService(
        ProjectRepository(db), vms, VolumeRepository(db), NetworkRepository(db)
    )
    projects.create("alpha")
    yield World(db, store, projects, vms)
    db.close()


def vm(name: str, cpus: int = 1) -> VMConfig:
    return resolve(
        VMCreate(name=name, image="tiny", cpus=cpus),
        tiny_manifest(),
        host_facts(),
        vm_id=uuid.uuid4().hex,
        kernel_path="/k",
        initrd_path=None,
    )


async def test_two_concurrent_admissions_cannot_both_take_the_last_slot(world: World) -> None:
    world.limit(max_instances=1)
    quota = world.quota(racers=2)
    results = await asyncio.gather(
        quota.admit("alpha", vm("a")), quota.admit("alpha", vm("b")), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], QuotaExceeded)
    assert refused[0].message == (
        "project 'alpha' would exceed its instances quota: limit 1, in use 1, this VM asks for 1"
    )


async def test_concurrent_admissions_fill_the_quota_exactly(world: World) -> None:
    world.limit(max_cpus=5)
    quota = world.quota(racers=4)
    results = await asyncio.gather(
        *(quota.admit("alpha", vm(f"v{n}", cpus=2)) for n in range(4)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 2, results
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))


async def test_an_admitted_vm_counts_once_its_row_is_in_and_not_after_it_is_deleted(
    world: World,
) -> None:
    world.limit(max_instances=2)
    quota = world.quota()
    first = vm("a")
    await quota.admit("alpha", first)
    world.vms.insert(first, "stopped", "alpha")  # counted by its row now, not twice
    second = vm("b")
    await quota.admit("alpha", second)
    with pytest.raises(QuotaExceeded, match="in use 2"):
        await quota.admit("alpha", vm("c"))
    world.vms.insert(second, "stopped", "alpha")
    world.vms.delete(first.id)
    world.vms.delete(second.id)
    await quota.admit("alpha", vm("d"))
    await quota.admit("alpha", vm("e"))


async def test_a_failed_launch_gives_its_reservation_back(world: World) -> None:
    world.limit(max_instances=1)
    quota = world.quota()
    release = await quota.admit("alpha", vm("a"))
    with pytest.raises(QuotaExceeded):
        await quota.admit("alpha", vm("b"))
    await release()
    await release()  # twice is harmless
    await quota.admit("alpha", vm("b"))


async def test_a_reservation_of_an_earlier_hangard_does_not_count(world: World) -> None:
    world.limit(max_instances=1)
    await world.quota().admit("alpha", vm("a"))  # its launch died with that process
    again = world.quota()
    await again.admit("alpha", vm("b"))
    record = await again.records.get("alpha")
    assert record is not None and list(record.value.pending) != []
    assert {r.owner for r in record.value.pending.values()} == {again.owner}


async def test_volumes_see_the_disks_of_admitted_vms(world: World) -> None:
    config = vm("a")
    world.limit(max_disk=config.disk_size + 10)
    quota = world.quota()
    quota.check_disk("alpha", 10 + config.disk_size)
    await quota.admit("alpha", config)
    with pytest.raises(QuotaExceeded, match="disk quota"):
        quota.check_disk("alpha", 11)
    quota.check_disk("alpha", 10)


async def test_admissions_that_keep_losing_give_up_with_a_conflict(world: World) -> None:
    quota = world.quota()
    real = world.store.commit
    tries = 0

    async def always_late(*args: object, **kwargs: object) -> int:
        nonlocal tries
        tries += 1
        raise RevisionConflict("quota/alpha", 1, 2)  # another admission got in first

    world.store.commit = always_late  # type: ignore[method-assign,assignment]
    with pytest.raises(Conflict, match="too many launches"):
        await quota.admit("alpha", vm("a"))
    assert tries == RETRIES
    world.store.commit = real  # type: ignore[method-assign]
    world.limit(max_instances=1)
    await quota.admit("alpha", vm("b"))  # the lost one holds nothing


async def test_a_launch_that_fails_after_its_admission_frees_its_slot(
    make_platform: PlatformFactory,
) -> None:
    """Through VMService: the disk cannot be made (after the admission, before the
    row), so the launch's reservation is given back and the next launch fits."""
    platform = make_platform()
    platform.projects.create("alpha", quotas={**UNLIMITED, "max_instances": 1})
    runner = platform.vms.runner
    assert isinstance(runner, RecordingRunner)

    def no_disk(argv: Sequence[str]) -> None:
        raise HostCommandFailed(argv, 1, "no space left on device")

    runner.responses.insert(0, (("qemu-img", "create"), no_disk))
    with pytest.raises(HostCommandFailed):
        await platform.vms.create(VMCreate(name="first", image="tiny"), project="alpha")
    runner.responses.pop(0)
    await platform.vms.create(VMCreate(name="second", image="tiny"), start=False, project="alpha")
    with pytest.raises(QuotaExceeded, match="instances quota: limit 1, in use 1"):
        await platform.vms.create(VMCreate(name="third", image="tiny"), project="alpha")
