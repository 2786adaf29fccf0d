"""debian-12 booted by UEFI from its own disk (OVMF -> GRUB -> kernel), with user-data
passed through and the keys still given to the default user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import Client
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for_agent

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1500)]

USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo passed-through > /var/tmp/hangar-user-data"]
"""


@pytest.fixture(scope="module")
def uefi_vm(daemon: Daemon, debian_image: str, ssh_home: Path) -> Iterator[str]:
    user_data = ssh_home / "user-data.yaml"
    user_data.write_text(USER_DATA)
    launched = daemon.cli(
        "launch", debian_image, "deb-uefi", "--firmware", "uefi",
        "--ssh-key", str(ssh_home / ".ssh" / "id_ed25519.pub"),
        "--cloud-init", str(user_data),
    )  # fmt: skip
    assert launched.code == 0, launched
    try:
        yield "deb-uefi"
    finally:
        daemon.cli("delete", "--force", "deb-uefi")


def test_debian_12_boots_by_uefi_from_its_disk(
    client: Client, daemon: Daemon, uefi_vm: str
) -> None:
    vm = client.vm(uefi_vm)
    assert vm["firmware"] == "uefi" and vm["machine"] == "q35"
    # Its own UEFI variable store, in its folder.
    vars_file = daemon.home / "lib" / "vms" / vm["id"] / "efivars.fd"
    assert vars_file.stat().st_size > 0
    wait_for_agent(client, uefi_vm)
    efi = client.exec(
        uefi_vm, ["sh", "-c", "ls /sys/firmware/efi/efivars | head -1; cat /proc/cmdline"]
    )
    assert efi["exit_code"] == 0, efi
    # The kernel came through GRUB's built-in config, not QEMU's -kernel.
    assert "hangar.image=debian-12" in efi["stdout"] and "hangar.name=" not in efi["stdout"]


def test_user_data_is_passed_through_and_keys_still_reach_the_user(
    client: Client, uefi_vm: str, ssh_home: Path
) -> None:
    wait_for_agent(client, uefi_vm)
    ran = client.exec(uefi_vm, ["cat", "/var/tmp/hangar-user-data"])
    assert ran["stdout"] == "passed-through\n", ran
    key = (ssh_home / ".ssh" / "id_ed25519.pub").read_text().split()[1]
    keys = client.exec(uefi_vm, ["cat", "/home/debian/.ssh/authorized_keys"])
    assert key in keys["stdout"], keys


# A non-volatile UEFI variable (attributes NV|BS|RT, then the data) lives in the VM's
# variable store, a pflash file no migration stream holds: the snapshot must keep it.
# A vendor GUID of our own: the kernel refuses unknown names in the EFI global one.
EFI_VAR = "/sys/firmware/efi/efivars/HangarSnap-5a6d5e12-3b8c-4c2e-9f53-1d6a7e3b9c41"


def sh(client: Client, vm: str, script: str) -> str:
    ran = client.exec(vm, ["sh", "-c", script])
    assert ran["exit_code"] == 0, ran
    return str(ran["stdout"])


def test_snapshot_and_restore_of_a_uefi_vm_keep_memory_disk_and_variables(
    client: Client, daemon: Daemon, uefi_vm: str
) -> None:
    wait_for_agent(client, uefi_vm)
    pid = sh(
        client,
        uefi_vm,
        "echo before > /root/kept; printf '\\007\\000\\000\\000one' > /tmp/var; "
        # efivarfs takes attributes and data in one write(): cat makes one, printf may not.
        f"cat /tmp/var > {EFI_VAR}; "
        "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!",
    ).strip()
    written = sh(client, uefi_vm, f"tail -c 3 {EFI_VAR}")
    assert written == "one", sh(client, uefi_vm, f"mount | grep efivar; ls -l {EFI_VAR}")
    snap = client.create_snapshot(uefi_vm, "uefi-mem", memory=True)
    assert snap["memory"], snap
    folder = daemon.home / "lib" / "vms" / client.vm(uefi_vm)["id"]
    kept = list(folder.rglob("kept/efivars.fd"))
    assert len(kept) == 1, sorted(folder.rglob("*"))
    assert "HangarSnap".encode("utf-16-le") in kept[0].read_bytes()

    sh(client, uefi_vm, f"echo after > /root/kept; chattr -i {EFI_VAR}; rm {EFI_VAR}; kill {pid}")
    assert "after" in sh(client, uefi_vm, "cat /root/kept")
    # OVMF wrote the deletion through to the VM's store (QEMU's pflash writes through).
    changed = (folder / "efivars.fd").read_bytes()
    assert changed != kept[0].read_bytes()

    restored = client.restore_snapshot(uefi_vm, "uefi-mem", force=True)
    assert restored["state"] == "running", restored
    assert (folder / "efivars.fd").read_bytes() == kept[0].read_bytes()
    wait_for_agent(client, uefi_vm, timeout=120)
    # The file, the process and the UEFI variable are as they were at the snapshot.
    assert sh(client, uefi_vm, "cat /root/kept") == "before\n"
    assert sh(client, uefi_vm, f"kill -0 {pid} && echo alive") == "alive\n"
    assert sh(client, uefi_vm, f"tail -c 3 {EFI_VAR}") == "one"


def test_uefi_vm_files_go_with_it(client: Client, daemon: Daemon, uefi_vm: str) -> None:
    folder = daemon.home / "lib" / "vms" / client.vm(uefi_vm)["id"]
    assert daemon.cli("delete", "--force", uefi_vm).code == 0
    assert not folder.exists()
