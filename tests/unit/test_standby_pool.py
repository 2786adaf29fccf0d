"""The standby pool's bookkeeping, with the VM side faked: filling up to the count,
claiming (the row moves, the guest is renamed over its port), and what a claim does
when it cannot be: the quota says no (the standby stays), the standby died (it goes;
the launch resumes the template instead), the launch asks for more than a name."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hangar.errors import Conflict, QuotaExceeded
from hangar.services.lifecycle import PowerState
from hangar.services.storage.images import MANIFEST, ImageStore
from hangar.services.templates import standby as standby_module
from hangar.services.templates.standby import PROJECT, StandbyPool
from hangar.spec.image import ImageManifest, WarmState
from hangar.spec.vm import NicCreate, PortForward, VMConfig, VMCreate
from hangar.state.db import Database
from hangar.state.projects import ProjectRepository
from hangar.state.vms import VMRepository
from tests.support.factories import tiny_manifest, warm_state


class FakePort:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.answer = "ok eth0 10.0.2.20 random=1,done=2"

    async def exchange(self, data: Callable[[], bytes]) -> str:
        self.sent.append(data())
        return self.answer

    def close(self) -> None:
        self.closed = True


class FakeMonitor:
    def __init__(self) -> None:
        self.hmp: list[str] = []

    async def execute(self, command: str, arguments: dict[str, str]) -> str:
        assert command == "human-monitor-command"
        self.hmp.append(arguments["command-line"])
        return ""  # HMP's success


class FakeRuntime:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = PowerState.RUNNING
        self.monitor = FakeMonitor()

    async def power_state(self) -> PowerState:
        return self.state


class FakeAgent:
    """A standby guest's agent: what it was asked to run."""

    def __init__(self, name: str, ran: list[tuple[str, list[str]]]) -> None:
        self.name = name
        self.ran = ran

    async def exec(self, argv: list[str], **kwargs: Any) -> Any:
        self.ran.append((self.name, argv))
        return SimpleNamespace(exit_code=255, stdout="", stderr="")


class FakeVMs:
    """What the pool uses of VMService: the real repository, fake QEMUs."""

    def __init__(self, repo: VMRepository, root: Path) -> None:
        self.repo = repo
        self.runtimes: dict[str, FakeRuntime] = {}
        self.supervisor = SimpleNamespace(get=self.runtimes.get)
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.quota: Callable[[str, VMConfig], None] | None = None
        self.paths = SimpleNamespace(vm_dir=lambda vm_id: root / vm_id)
        self.deleted: list[str] = []
        self.agent_ran: list[tuple[str, list[str]]] = []

    def agent(self, config: VMConfig) -> FakeAgent:
        return FakeAgent(config.name, self.agent_ran)

    async def quota_check(self, project: str, config: VMConfig) -> Callable[[], Awaitable[None]]:
        if self.quota is not None:
            self.quota(project, config)

        async def release() -> None:
            pass

        return release

    def port_owners(self, config: VMConfig) -> dict[tuple[str, int], str]:
        return {}

    def files(self, config: VMConfig) -> Any:
        return SimpleNamespace(seed=self.paths.vm_dir(config.id) / "seed.iso")

    async def delete(self, name: str, *, force: bool, project: str) -> None:
        record = self.repo.get(name, project)
        self.runtimes.pop(record.id, None)
        self.repo.delete(record.id)
        self.deleted.append(name)

    async def get(self, name: str, project: str) -> Any:
        record = self.repo.get(name, project)
        return SimpleNamespace(id=record.id, name=record.name, project=record.project)


class FakeWarm:
    def __init__(self, vms: FakeVMs, store: ImageStore) -> None:
        self.vms = vms
        self.store = store
        self.made = 0
        self.ports: list[FakePort] = []
        self.forwards: list[PortForward] = []  # the resumed views'

    async def resume(
        self,
        request: VMCreate,
        image: ImageManifest,
        warm: WarmState,
        project: str,
        *,
        standby: bool = False,
    ) -> tuple[Any, FakePort]:
        assert standby and project == PROJECT
        self.made += 1
        vm_id = f"{self.made:032x}"
        config = warm.config.model_copy(update={"id": vm_id, "name": request.name})
        self.vms.repo.insert(config, PowerState.RUNNING, project)
        self.vms.runtimes[vm_id] = FakeRuntime(request.name)
        port = FakePort()
        self.ports.append(port)
        view = SimpleNamespace(
            id=vm_id, macs=["52:54:00:12:34:56"], forwards=self.forwards, user=None
        )
        return view, port


@pytest.fixture
def pool(tmp_path: Path) -> StandbyPool:
    db = Database(tmp_path / "h.db")
    repo = VMRepository(db)
    store = ImageStore(tmp_path / "images")
    manifest = tiny_manifest(name="tw", warm=warm_state())
    (store.path("tw")).mkdir(parents=True)
    (store.path("tw") / MANIFEST).write_text(manifest.model_dump_json())
    fake = FakeWarm(FakeVMs(repo, tmp_path / "vms"), store)
    return StandbyPool(fake, ProjectRepository(db))  # type: ignore[arg-type]


def _fake(pool: StandbyPool) -> FakeWarm:
    warm: FakeWarm = pool.warm  # type: ignore[assignment]
    return warm


async def _filled(pool: StandbyPool, count: int) -> list[str]:
    pool.set_count("tw", count)
    for _ in range(100):
        filler = pool._fillers.get("tw")
        if filler is None or filler.done():
            break
        await asyncio.sleep(0.01)
    return pool.view("tw").ready


async def test_it_fills_up_to_the_count_and_lets_extras_go(pool: StandbyPool) -> None:
    await pool.start()
    ready = await _filled(pool, 2)
    assert len(ready) == 2 and all(n.startswith("standby-") for n in ready)
    assert [r.name for r in pool.vms.repo.list(PROJECT)] == sorted(ready)
    assert await _filled(pool, 1) == ready[:1]
    assert _fake(pool).vms.deleted == ready[1:]
    assert _fake(pool).ports[1].closed and not _fake(pool).ports[0].closed


async def test_a_new_standby_warms_up_its_sshd_through_its_own_agent(pool: StandbyPool) -> None:
    _fake(pool).forwards = [PortForward(host_port=40022, guest_port=22)]
    await pool.start()
    [name] = await _filled(pool, 1)
    [(guest, argv)] = _fake(pool).vms.agent_ran
    assert guest == name and argv[:3] == ["sh", "-c", standby_module.WARMUP_SCRIPT]


async def test_a_claim_moves_the_vm_and_renames_the_guest(pool: StandbyPool) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    image = pool.warm.store.get("tw")
    claimed = await pool.claim(image, VMCreate(name="web", image="tw"), "default")
    assert claimed is not None and claimed.name == "web" and claimed.project == "default"
    record = pool.vms.repo.get("web")
    assert record.config.name == "web" and pool.vms.repo.find(name, PROJECT) is None
    # The guest got the name alone, its MAC kept, over the port held since its resume.
    port = _fake(pool).ports[0]
    sent = port.sent[0].decode(errors="replace")
    assert "name 3\nweb\n" in sent and "new 17\n52:54:00:12:34:56\n" in sent
    assert "machine-id" not in sent and "file:" not in sent and port.closed
    # A new one is on its way, after a delay that leaves the CPU to the claimed VM.
    assert pool.view("tw").ready == []
    assert "tw" in pool._fillers


async def test_a_claim_the_quota_refuses_keeps_the_standby(pool: StandbyPool) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)

    def refuse(project: str, config: VMConfig) -> None:
        raise QuotaExceeded("project 'default' is at its limit of 1 VMs", hint="ask for more")

    _fake(pool).vms.quota = refuse
    with pytest.raises(QuotaExceeded):
        await pool.claim(pool.warm.store.get("tw"), VMCreate(name="web", image="tw"), "default")
    assert pool.view("tw").ready == [name]
    assert pool.vms.repo.find(name, PROJECT) is not None and pool.vms.repo.find("web") is None


async def test_a_dead_standby_is_dropped_and_the_launch_resumes_instead(pool: StandbyPool) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    record = pool.vms.repo.get(name, PROJECT)
    _fake(pool).vms.runtimes[record.id].state = PowerState.CRASHED
    image = pool.warm.store.get("tw")
    assert await pool.claim(image, VMCreate(name="web", image="tw"), "default") is None
    assert pool.vms.repo.find(name, PROJECT) is None and pool.vms.repo.find("web") is None
    assert _fake(pool).ports[0].closed


async def test_a_guest_that_fails_the_rename_is_dropped_and_nothing_moves(
    pool: StandbyPool,
) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    _fake(pool).ports[0].answer = "fail 1 /etc/hostname: Read-only file system"
    image = pool.warm.store.get("tw")
    assert await pool.claim(image, VMCreate(name="web", image="tw"), "default") is None
    assert pool.vms.repo.find("web") is None and pool.vms.repo.find(name, PROJECT) is None
    assert _fake(pool).vms.deleted == [name] and pool.view("tw").ready == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _with_forward(port: int) -> VMCreate:
    forward = PortForward(host_port=port, guest_port=80)
    return VMCreate(name="web", image="tw", nics=(NicCreate(forwards=(forward,)),))


async def test_a_claim_adds_the_launch_port_forwards_to_the_running_vm(
    pool: StandbyPool,
) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    runtime = _fake(pool).vms.runtimes[pool.vms.repo.get(name, PROJECT).id]
    port = free_port()
    claimed = await pool.claim(pool.warm.store.get("tw"), _with_forward(port), "default")
    assert claimed is not None
    assert runtime.monitor.hmp == [f"hostfwd_add net0 tcp:127.0.0.1:{port}-:80"]
    assert [f.host_port for f in pool.vms.repo.get("web").config.nics[0].forwards] == [port]


async def test_a_forward_qemu_refuses_is_undone_and_the_standby_dropped(
    pool: StandbyPool,
) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    runtime = _fake(pool).vms.runtimes[pool.vms.repo.get(name, PROJECT).id]
    web, api = free_port(), free_port()
    request = VMCreate(
        name="web",
        image="tw",
        nics=(
            NicCreate(
                forwards=(
                    PortForward(host_port=web, guest_port=80),
                    PortForward(host_port=api, guest_port=8080),
                )
            ),
        ),
    )
    calls = 0

    async def second_refused(command: str, arguments: dict[str, str]) -> str:
        nonlocal calls
        runtime.monitor.hmp.append(arguments["command-line"])
        calls += 1
        return "could not set up host forwarding rule" if calls == 2 else ""

    runtime.monitor.execute = second_refused  # type: ignore[method-assign]
    assert await pool.claim(pool.warm.store.get("tw"), request, "default") is None
    assert runtime.monitor.hmp == [
        f"hostfwd_add net0 tcp:127.0.0.1:{web}-:80",
        f"hostfwd_add net0 tcp:127.0.0.1:{api}-:8080",
        f"hostfwd_remove net0 tcp:127.0.0.1:{web}",
    ]
    assert pool.vms.repo.find("web") is None and pool.vms.repo.find(name, PROJECT) is None


async def test_a_forward_to_a_taken_port_is_refused_and_the_standby_stays(
    pool: StandbyPool,
) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with pytest.raises(Conflict, match="not available"):
            await pool.claim(pool.warm.store.get("tw"), _with_forward(taken), "default")
    assert pool.view("tw").ready == [name] and pool.vms.repo.find("web") is None


async def test_launches_that_ask_for_more_than_a_name_leave_the_standby(
    pool: StandbyPool,
) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    image = pool.warm.store.get("tw")
    ssh = PortForward(host_port=free_port(), guest_port=22)
    asks = [
        VMCreate(name="web", image="tw", nics=(NicCreate(forwards=(ssh,)),)),
        VMCreate(name="web", image="tw", disk=2 * image.disk_virtual_size),
    ]
    for request in asks:
        assert await pool.claim(image, request, "default") is None
    assert pool.view("tw").ready == [name]


async def test_start_removes_what_a_crashed_hangard_left(pool: StandbyPool) -> None:
    await pool.start()
    [name] = await _filled(pool, 1)
    again = StandbyPool(pool.warm, pool.projects)
    await again.start()  # a new hangard over the same database and template
    assert name in _fake(pool).vms.deleted
    assert pool.vms.repo.find(name, PROJECT) is None
    await pool.stop()
    await again.stop()
    assert pool.vms.repo.list(PROJECT) == []


def test_the_module_names_a_project_no_user_can_make() -> None:
    from hangar.services.projects import check_project_name

    with pytest.raises(Exception, match="invalid project name"):
        check_project_name(standby_module.PROJECT)
