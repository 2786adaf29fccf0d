"""Golden-file tests of the QEMU command line. Regenerate with UPDATE_GOLDEN=1."""

import os
from pathlib import Path

import pytest

from hangar.services.qemu.argv import RamFile, VMFiles, kernel_cmdline, render_argv
from hangar.spec.resolve import resolve
from hangar.spec.vm import DataDisk, NicCreate, PortForward, VMConfig, VMCreate
from tests.support.factories import debian_manifest, host_facts, tiny_manifest

GOLDEN = Path(__file__).parent.parent / "golden"
VM_ID = "0123456789abcdef0123456789abcdef"
FILES = VMFiles(
    dir=Path("/var/lib/hangar/vms") / VM_ID, runtime=Path("/run/hangar/vm/0123456789ab")
)
# The number hangard's listening QMP socket has in QEMU (any: hangard passes its own).
QMP_FD = 7


def _config(**fields: object) -> VMConfig:
    request = VMCreate.model_validate({"name": "web", "image": "tiny", **fields})
    return resolve(
        request,
        tiny_manifest(),
        host_facts(),
        vm_id=VM_ID,
        kernel_path="/var/lib/hangar/images/tiny/vmlinux-0123456789ab",
        initrd_path="/var/lib/hangar/images/tiny/initrd-0123456789ab.img",
    )


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHangarTestKeyHangarTestKeyHangarTestKey me@host"
OVMF = {
    "ovmf_code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "ovmf_vars": "/usr/share/OVMF/OVMF_VARS_4M.fd",
}


def _debian(**fields: object) -> VMConfig:
    request = VMCreate.model_validate({"name": "deb", "image": "debian-12", **fields})
    ssh = {"host_port": 2222, "guest_port": 22}
    request = request.model_copy(update={"nics": (NicCreate(forwards=(PortForward(**ssh),)),)})
    return resolve(
        request,
        debian_manifest(),
        host_facts(**OVMF),
        vm_id=VM_ID,
        kernel_path="/var/lib/hangar/images/debian-12/vmlinux-fedcba987654",
        initrd_path="/var/lib/hangar/images/debian-12/initrd-fedcba987654.img",
    )


def _blank_iso() -> VMConfig:
    request = VMCreate(name="inst", iso="/srv/isos/installer.iso", disk=8 * 1024**3)
    return resolve(
        request, None, host_facts(**OVMF), vm_id=VM_ID, kernel_path=None, initrd_path=None
    )


CASES = {
    "debian-direct-cloud-init": (_debian(ssh_keys=[KEY]), host_facts(**OVMF)),
    "debian-bios": (_debian(firmware="bios"), host_facts(**OVMF)),
    "debian-uefi": (_debian(firmware="uefi", cpus=2), host_facts(**OVMF)),
    "iso-install-blank-disk": (_blank_iso(), host_facts(**OVMF)),
    "tiny-default": (_config(), host_facts()),
    "tiny-smp-forwards": (
        _config(
            cpus=2,
            memory="1G",
            disk="2G",
            nics=[
                {
                    "forwards": [
                        {"host_port": 8080, "guest_port": 80},
                        {"host_port": 5353, "guest_port": 53, "protocol": "udp"},
                    ]
                }
            ],
        ),
        host_facts(),
    ),
    "tiny-two-volumes": (
        _config().model_copy(
            update={
                "data_disks": (
                    DataDisk(volume="ab" * 16, path="/pools/p1/data.qcow2", format="qcow2"),
                    DataDisk(volume="cd" * 16, path="/var/lib/hangar/volumes/r.raw", format="raw"),
                )
            }
        ),
        host_facts(),
    ),
    "tiny-q35-volume": (
        _config(machine="q35").model_copy(
            update={
                "data_disks": (
                    DataDisk(volume="ef" * 16, path="/pools/p1/d.qcow2", format="qcow2", slot=2),
                )
            }
        ),
        host_facts(),
    ),
    "tiny-q35-nics": (
        _config(
            machine="q35",
            nics=[{}, {"type": "network", "network": "lan", "ip": "10.77.0.5"}],
        ).model_copy(
            update={
                "nics": (
                    *_config(machine="q35").nics,
                    _config(nics=[{}, {"type": "network", "network": "lan", "ip": "10.77.0.5"}])
                    .nics[1]
                    .model_copy(update={"slot": 5}),
                )
            }
        ),
        host_facts(),
    ),
    "tiny-network-nics": (
        _config(
            nics=[
                {"type": "network", "network": "lan", "ip": "10.77.0.5"},
                {"type": "network", "network": "backend"},
            ]
        ),
        host_facts(),
    ),
    "tiny-kvm-two-nics": (
        _config(nics=[{}, {"mac": "52:54:00:aa:bb:cc"}]),
        host_facts(accelerator="kvm", tsc_khz=None),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_matches_golden(case: str) -> None:
    config, host = CASES[case]
    assert_golden(case, render_argv(config, host, FILES, qmp_fd=QMP_FD))


def assert_golden(case: str, argv: list[str]) -> None:
    rendered = "\n".join(argv) + "\n"
    golden = GOLDEN / f"argv-{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_qmp_is_served_on_the_socket_hangard_hands_over() -> None:
    """With ``qmp_fd`` QEMU serves QMP on that inherited listening socket and makes no
    socket file of its own; without it (the benchmarks' plain QEMU) QEMU makes one."""
    handed = render_argv(*CASES["tiny-default"], FILES, qmp_fd=QMP_FD)
    assert "-qmp" not in handed and not any("qmp.sock" in a for a in handed)
    at = handed.index("socket,id=qmp,fd=7,server=on,wait=off")
    assert handed[at - 1] == "-chardev"
    assert handed[handed.index("-mon") + 1] == "chardev=qmp,mode=control"
    own = render_argv(*CASES["tiny-default"], FILES)
    assert own[own.index("-qmp") + 1] == f"unix:{FILES.qmp_socket},server=on,wait=off"
    assert not any("id=qmp" in a for a in own) and "-mon" not in own


def test_render_is_deterministic() -> None:
    config, host = CASES["tiny-smp-forwards"]
    assert render_argv(config, host, FILES) == render_argv(config, host, FILES)


def test_never_lets_qemu_probe_a_format() -> None:
    argv = render_argv(*CASES["tiny-default"], FILES)
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    assert any("driver=qcow2" in b for b in blockdevs)
    assert "-drive" not in argv and "-hda" not in argv


def test_starts_paused_and_exits_on_reboot() -> None:
    argv = render_argv(*CASES["tiny-default"], FILES)
    assert "-S" in argv and "-no-reboot" in argv


def test_cmdline_carries_tsc_only_when_known() -> None:
    config, _ = CASES["tiny-default"]
    assert "tsc_early_khz=2999998" in kernel_cmdline(config, host_facts())
    assert "tsc_early_khz" not in kernel_cmdline(config, host_facts(tsc_khz=None))
    assert kernel_cmdline(config, host_facts()).endswith("hangar.name=web rdinit=/init")


TEMPLATE_RAM = Path("/var/lib/hangar/images/web-warm/ram.img")
# A warm launch maps the template's RAM file private; the helper that makes that file
# maps it shared and runs the same devices without the VM's taps and host ports.
WARM_CASES: dict[str, tuple[VMConfig, dict[str, object]]] = {
    "warm-launch-debian": (
        _debian(ssh_keys=[KEY]),
        {"incoming": True, "ram": RamFile(TEMPLATE_RAM, shared=False)},
    ),
    "warm-helper-q35-nics": (
        _config(
            machine="q35",
            nics=[
                {"forwards": [PortForward(host_port=8080, guest_port=80)]},
                {"type": "network", "network": "lan", "ip": "10.77.0.5"},
            ],
        ),
        {"incoming": True, "ram": RamFile(TEMPLATE_RAM, shared=True), "detached_nics": True},
    ),
}


@pytest.mark.parametrize("case", sorted(WARM_CASES))
def test_warm_argv_matches_golden(case: str) -> None:
    config, options = WARM_CASES[case]
    argv = render_argv(config, host_facts(), FILES, qmp_fd=QMP_FD, **options)  # type: ignore[arg-type]
    assert_golden(case, argv)


def test_helper_argv_holds_no_tap_and_no_host_port() -> None:
    config, options = WARM_CASES["warm-helper-q35-nics"]
    argv = render_argv(config, host_facts(), FILES, **options)  # type: ignore[arg-type]
    joined = " ".join(argv)
    assert "tap" not in joined and "hostfwd" not in joined and "8080" not in joined
    assert "hubport,id=net1,hubid=1" in joined
    # The devices are the VM's own: same MACs, same count.
    assert [a for a in argv if a.startswith("virtio-net")] == [
        a for a in render_argv(config, host_facts(), FILES) if a.startswith("virtio-net")
    ]


def test_identity_port_only_where_the_config_asks() -> None:
    """New agent VMs get hangar's identity port; a config from before it existed
    (identity_channel absent, so False) keeps its devices, or its saved guests would
    no longer load."""
    new = _debian(ssh_keys=[KEY])
    assert new.identity_channel
    old = VMConfig.model_validate(new.model_dump(exclude={"identity_channel"}))
    joined_new = " ".join(render_argv(new, host_facts(), FILES))
    joined_old = " ".join(render_argv(old, host_facts(), FILES))
    assert "name=org.hangar.identity.0" in joined_new
    assert f"path={FILES.runtime}/identity.sock,server=on,wait=off" in joined_new
    assert "identity" not in joined_old
    assert joined_old == joined_new.replace(
        f" -chardev socket,id=hangar-id,path={FILES.runtime}/identity.sock,server=on,"
        "wait=off -device virtserialport,bus=vser.0,chardev=hangar-id,"
        "name=org.hangar.identity.0",
        "",
    )
    assert "identity" not in " ".join(render_argv(_config(), host_facts(), FILES))  # no agent


def test_entropy_devices_only_where_the_config_asks() -> None:
    """New VMs get virtio-rng (both machines) and vmgenid (q35 only: microvm's ACPI
    tables have no vmgenid); a config from before (entropy absent, so False) keeps
    its devices, or its saved guests would no longer load."""
    for config, model in ((_config(), "virtio-rng-device"), (_debian(), "virtio-rng-device")):
        argv = render_argv(config, host_facts(), FILES)
        assert f"{model},rng=rng0" in argv and "rng-random,id=rng0,filename=/dev/urandom" in argv
        assert not any("vmgenid" in a for a in argv)
    q35 = _config(machine="q35")
    argv = render_argv(q35, host_facts(), FILES)
    assert "virtio-rng-pci,rng=rng0" in argv
    # guid=auto: every QEMU process (each launch, warm launch, fork, restore) a new id.
    assert "vmgenid,id=vmgenid0,guid=auto" in argv
    old = VMConfig.model_validate(q35.model_dump(exclude={"entropy"}))
    assert not old.entropy
    joined = " ".join(render_argv(old, host_facts(), FILES))
    assert "rng" not in joined and "vmgenid" not in joined


def test_a_read_only_ram_file_is_opened_read_only_and_mapped_private() -> None:
    config = _debian()
    args = render_argv(
        config, host_facts(), FILES, incoming=True, ram=RamFile(TEMPLATE_RAM, False, True)
    )
    backend = next(a for a in args if a.startswith("memory-backend-file"))
    assert backend.endswith(f"mem-path={TEMPLATE_RAM},share=off,readonly=on,rom=off")


@pytest.mark.parametrize(
    ("version", "read_only"),
    [("7.2.22", False), ("8.1.5", False), ("8.2.0", True), ("9.0.1", True), ("", False)],
)
def test_qemu_maps_a_read_only_ram_file_from_8_2(version: str, read_only: bool) -> None:
    assert host_facts(qemu_version=version).maps_read_only_ram is read_only
