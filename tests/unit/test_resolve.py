import pytest

from hangar.errors import InvalidInput, ResourceLimit
from hangar.spec.resolve import mac_from_id, resolve
from hangar.spec.vm import NicCreate, PortForward, VMCreate
from tests.support.factories import host_facts, tiny_manifest

VM_ID = "abcdef0123456789abcdef0123456789"


def _resolve(**fields: object):  # type: ignore[no-untyped-def]
    request = VMCreate.model_validate({"name": "web", "image": "tiny", **fields})
    return resolve(
        request,
        tiny_manifest(),
        host_facts(),
        vm_id=VM_ID,
        kernel_path="/img/vmlinux",
        initrd_path="/img/initrd.img",
    )


def test_defaults_come_from_the_image() -> None:
    config = _resolve()
    assert (config.cpus, config.memory, config.disk_size) == (1, 256 * 1024**2, 1024**3)
    assert config.machine == "microvm"
    assert config.boot.kernel == "/img/vmlinux"
    assert config.boot.cmdline == "rdinit=/init"
    assert config.boot_marker == "HANGAR-BOOT-COMPLETE"
    assert len(config.nics) == 1 and config.nics[0].type == "user"
    assert config.nics[0].mac == mac_from_id(VM_ID, 0)


def test_request_overrides_defaults() -> None:
    config = _resolve(cpus=2, memory="512M", disk="2G")
    assert (config.cpus, config.memory, config.disk_size) == (2, 512 * 1024**2, 2 * 1024**3)


def test_macs_are_stable_distinct_and_local() -> None:
    a, b = mac_from_id(VM_ID, 0), mac_from_id(VM_ID, 1)
    assert a != b and a == mac_from_id(VM_ID, 0)
    assert a.startswith("52:54:00:")


def test_too_many_cpus() -> None:
    with pytest.raises(ResourceLimit, match="3 vCPUs asked for, but the host has 2") as info:
        _resolve(cpus=3)
    assert "2 vCPUs or fewer" in info.value.hint


def test_too_much_memory() -> None:
    with pytest.raises(ResourceLimit, match="the host has 24G"):
        _resolve(memory="25G")


def test_too_little_memory() -> None:
    with pytest.raises(InvalidInput, match="too little"):
        _resolve(memory="64M")


def test_disk_smaller_than_image() -> None:
    with pytest.raises(InvalidInput, match="smaller than image 'tiny'"):
        _resolve(disk="64M")


def test_same_host_port_twice() -> None:
    fwd = PortForward(host_port=8080, guest_port=80)
    nic = NicCreate(forwards=(fwd, PortForward(host_port=8080, guest_port=81)))
    with pytest.raises(InvalidInput, match="forwarded twice"):
        _resolve(nics=[nic.model_dump()])


def test_bad_name_refused() -> None:
    with pytest.raises(InvalidInput):
        _resolve(name="../etc")


def test_image_default_nic_count_is_used_unless_nics_are_given() -> None:
    from hangar.spec.image import ImageDefaults
    from hangar.spec.resolve import resolve
    from hangar.spec.vm import VMCreate
    from tests.support.factories import host_facts, tiny_manifest

    image = tiny_manifest(defaults=ImageDefaults(nics=2))
    args = {"vm_id": "ab" * 16, "kernel_path": "/k", "initrd_path": None}
    two = resolve(VMCreate(name="a", image="tiny"), image, host_facts(), **args)  # type: ignore[arg-type]
    assert len(two.nics) == 2 and two.nics[0].mac != two.nics[1].mac
    one = resolve(VMCreate(name="a", image="tiny", nics=({},)), image, host_facts(), **args)  # type: ignore[arg-type]
    assert len(one.nics) == 1


def test_machine_comes_from_the_request_then_the_image() -> None:
    from hangar.spec.image import ImageDefaults
    from hangar.spec.resolve import resolve
    from hangar.spec.vm import VMCreate
    from tests.support.factories import host_facts, tiny_manifest

    args = {"vm_id": "ab" * 16, "kernel_path": "/k", "initrd_path": None}
    plain = resolve(VMCreate(name="a", image="tiny"), tiny_manifest(), host_facts(), **args)  # type: ignore[arg-type]
    assert plain.machine == "microvm"
    q35_image = tiny_manifest(defaults=ImageDefaults(machine="q35"))
    assert resolve(VMCreate(name="a", image="t"), q35_image, host_facts(), **args).machine == "q35"  # type: ignore[arg-type]
    asked = VMCreate(name="a", image="t", machine="microvm")
    assert resolve(asked, q35_image, host_facts(), **args).machine == "microvm"  # type: ignore[arg-type]
