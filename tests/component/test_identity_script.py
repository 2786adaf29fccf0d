"""identity.pl — what a guest resumed from a warm template runs to become a distinct
machine — run by the host's perl in namespaces of its own: a UTS namespace for the
hostname, a network namespace whose veth stands for the guest's NIC, a mount namespace
where sysfs shows that network namespace, and a folder standing for / for /etc and /run.
A background loop plays systemd-networkd: once the MAC changes it writes a new lease."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hangar.services.templates import identity

OLD = "52:54:00:aa:bb:01"
NEW = "52:54:00:cc:dd:02"
OLD_LEASE = "ADDRESS=10.9.0.5\nCLIENTID=ff00000000aaaa\n"
NEW_LEASE = "ADDRESS=10.9.0.7\nCLIENTID=ff00000000bbbb\n"

# eth0 stands for the guest's NIC; a lease appears (written and renamed, a new inode,
# as networkd does) only once eth0 carries the new MAC, unless there is no DHCP server;
# its address half a second later.
SANDBOX = r"""
set -eu
mount -t sysfs sysfs /sys
ip link add eth0 address "$OLD" type veth peer name peer0
leases="$ROOT/run/systemd/netif/leases"
index=$(cat /sys/class/net/eth0/ifindex)
printf '%s' "$OLD_LEASE" > "$leases/$index"
helper=
if [ "$DHCP" = yes ]; then
    (
        while [ "$(cat /sys/class/net/eth0/address)" != "$NEW" ]; do sleep 0.01; done
        printf '%s' "$NEW_LEASE" > "$leases/.new" && mv "$leases/.new" "$leases/$index"
        # as networkd, the address a little after the lease file
        sleep 0.5
        touch "$ROOT/address-added"
        ip addr add 10.9.0.7/24 dev eth0
    ) &
    helper=$!
fi
status=0
if [ "$MODE" = fifo ]; then
    # saved waiting on its FIFO (templates from before the identity port)
    perl -e "$SCRIPT" -- --wait "$ROOT/listen" > "$ROOT/out" &
    listener=$!
    while [ ! -e "$ROOT/listen/ready" ]; do sleep 0.01; done
    cat "$INPUT" > "$ROOT/listen/request"
    wait "$listener" || status=$?
    cat "$ROOT/out"
    [ ! -e "$ROOT/listen" ] || echo "listen-left" >&2
else
    perl -e "$SCRIPT" < "$INPUT" || status=$?
fi
echo "hostname=$(cat /proc/sys/kernel/hostname)" >&2
echo "mac=$(cat /sys/class/net/eth0/address)" >&2
[ ! -e "$ROOT/address-added" ] || echo "address-added-before-exit" >&2
[ -z "${helper:-}" ] || kill "$helper" 2>/dev/null || true
exit $status
"""


@pytest.fixture
def guest_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    files = {
        "etc/hostname": "template\n",
        "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 template\n::1 localhost\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/sshd_config": "keep me\n",
        "etc/ssh/ssh_host_ed25519_key": "old secret",
        "etc/ssh/ssh_host_dsa_key": "old dsa",
        "etc/ssh/ssh_host_dsa_key.pub": "old dsa public",
        "etc/systemd/network/10-cloud-init-eth0.network": (
            f"[Match]\nMACAddress={OLD.upper()}\nName=eth0\n\n[Network]\nDHCP=ipv4\n"
        ),
        "etc/systemd/network/90-other.network": "[Match]\nName=en*\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/machine-id").chmod(0o444)
    (root / "run/systemd/netif/leases").mkdir(parents=True)
    return root


def run_identity(
    tmp_path: Path,
    root: Path,
    *,
    old: str = OLD,
    dhcp: bool = True,
    wait: float = 10,
    mode: str = "stdin",
    data: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    data = data or identity.agent_input(
        name="warm-7",
        saved_mac=old,
        mac=NEW,
        machine_id="fedcba9876543210fedcba9876543210",
        seed=os.urandom(64),
        now_ns=None,  # the host's clock is not ours to set
        files=identity.HostKeyMaker().make("warm-7"),
        root=str(root),
        wait=wait,
    )
    (tmp_path / "input").write_bytes(data)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "ROOT": str(root),
        "OLD": OLD,
        "NEW": NEW,
        "OLD_LEASE": OLD_LEASE,
        "NEW_LEASE": NEW_LEASE,
        "DHCP": "yes" if dhcp else "no",
        "MODE": mode,
        "SCRIPT": identity.AGENT_SCRIPT,
        "INPUT": str(tmp_path / "input"),
    }
    return subprocess.run(
        ["unshare", "--uts", "--net", "--mount", "--fork", "sh", "-c", SANDBOX],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_guest_gets_its_new_identity_and_lease(tmp_path: Path, guest_root: Path) -> None:
    ran = run_identity(tmp_path, guest_root)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "eth0 10.9.0.7\n"
    # It waited for the kernel to have the address, not just for the lease file.
    assert "address-added-before-exit" in ran.stderr
    assert "hostname=warm-7" in ran.stderr
    assert f"mac={NEW}" in ran.stderr
    etc = guest_root / "etc"
    assert (etc / "hostname").read_text() == "warm-7\n"
    assert (etc / "hosts").read_text() == ("127.0.0.1 localhost\n127.0.1.1 warm-7\n::1 localhost\n")
    assert (etc / "machine-id").read_text() == "fedcba9876543210fedcba9876543210\n"
    assert stat.S_IMODE((etc / "machine-id").stat().st_mode) == 0o444
    # cloud-init's file matches the NIC by its new MAC; the other one is untouched.
    network = (etc / "systemd/network/10-cloud-init-eth0.network").read_text()
    assert f"MACAddress={NEW}" in network and OLD.upper() not in network
    assert (etc / "systemd/network/90-other.network").read_text() == "[Match]\nName=en*\n"
    # New host keys of three types with the right modes; the DSA key is gone, the
    # rest of /etc/ssh stays; no temporary file is left anywhere.
    ssh = etc / "ssh"
    names = sorted(p.name for p in ssh.iterdir())
    assert names == sorted(
        ["sshd_config"]
        + [f"ssh_host_{t}_key{s}" for t in ("rsa", "ecdsa", "ed25519") for s in ("", ".pub")]
    )
    assert (ssh / "sshd_config").read_text() == "keep me\n"
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = ssh / f"ssh_host_{kind}_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.with_suffix(".pub").stat().st_mode) == 0o644
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
        ).stdout.split()[:2]
        assert key.with_suffix(".pub").read_text().split()[:2] == derived
        assert key.with_suffix(".pub").read_text().endswith(" root@warm-7\n")
    assert not list(guest_root.rglob("*.hangar-new"))


def test_saved_waiting_on_its_fifo_it_takes_its_input_from_there(
    tmp_path: Path, guest_root: Path
) -> None:
    ran = run_identity(tmp_path, guest_root, mode="fifo")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "eth0 10.9.0.7\n"
    assert "hostname=warm-7" in ran.stderr and f"mac={NEW}" in ran.stderr
    assert "listen-left" not in ran.stderr  # its FIFO and ready file are gone
    assert (guest_root / "etc/hostname").read_text() == "warm-7\n"


def test_a_new_name_alone_keeps_the_mac_lease_machine_id_and_keys(
    tmp_path: Path, guest_root: Path
) -> None:
    # What a standby VM's guest gets when a launch claims it (identity.rename).
    etc = guest_root / "etc"
    kept = {p: p.read_bytes() for p in (etc / "ssh").iterdir()}
    kept[etc / "machine-id"] = (etc / "machine-id").read_bytes()
    network = etc / "systemd/network/10-cloud-init-eth0.network"
    kept[network] = network.read_bytes()
    data = identity.agent_input(
        name="claimed-1",
        saved_mac=OLD,
        mac=OLD,
        machine_id=None,
        seed=os.urandom(32),
        now_ns=None,
        files=[],
        root=str(guest_root),
    )
    started = time.monotonic()
    ran = run_identity(tmp_path, guest_root, data=data)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "eth0 10.9.0.5\n"  # the lease it had: no DHCP to wait for
    assert time.monotonic() - started < 5
    assert "hostname=claimed-1" in ran.stderr and f"mac={OLD}" in ran.stderr
    assert (etc / "hostname").read_text() == "claimed-1\n"
    assert "127.0.1.1 claimed-1\n" in (etc / "hosts").read_text()
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_guest_without_the_saved_mac_is_left_untouched(tmp_path: Path, guest_root: Path) -> None:
    def files() -> dict[Path, bytes]:  # the sandbox writes the lease file itself
        return {p: p.read_bytes() for p in (guest_root / "etc").rglob("*") if p.is_file()}

    before = files()
    ran = run_identity(tmp_path, guest_root, old="52:54:00:00:00:99")
    assert ran.returncode == 3
    assert "no NIC with MAC 52:54:00:00:00:99" in ran.stderr
    assert "hostname=warm-7" not in ran.stderr
    assert files() == before


def test_no_lease_for_the_new_mac_fails_with_exit_4(tmp_path: Path, guest_root: Path) -> None:
    ran = run_identity(tmp_path, guest_root, dhcp=False, wait=1)
    assert ran.returncode == 4
    assert f"no DHCP lease on eth0 for MAC {NEW}" in ran.stderr


def test_agent_input_records_are_length_prefixed() -> None:
    data = identity.agent_input(
        name="a",
        saved_mac=OLD,
        mac=NEW,
        machine_id="m",
        seed=b"\n\n",
        now_ns=1_700_000_000_123_456_789,
        files=[identity.GuestFile("/etc/x", 0o600, b"two\nlines")],
    )
    assert data.startswith(b"seed 2\n\n\n\ntime 20\n1700000000 123456789\nname 1\na\n")
    assert data.endswith(b"file:/etc/x 14\n0600 two\nlines\n")
    assert b"drop:/etc/ssh 25\n" + identity.HOST_KEY_NAMES.encode() in data
    with pytest.raises(ValueError):
        identity.agent_input(
            name="a", saved_mac=OLD, mac=NEW, machine_id="m", seed=b"", now_ns=None,
            files=[identity.GuestFile("/etc/a b", 0o600, b"")],
        )  # fmt: skip


def test_host_key_maker_hands_out_each_key_once_and_keeps_spares() -> None:
    maker = identity.HostKeyMaker(spare=2)
    maker.fill()
    deadline = time.monotonic() + 30
    while maker.ready() < 2:
        assert time.monotonic() < deadline, "no spare RSA keys made"
        time.sleep(0.05)
    first, second = maker.make("a"), maker.make("b")
    assert maker.ready() <= 1  # a spare was taken (and more are being made)
    by_path = [{f.path: f.content for f in files} for files in (first, second)]
    assert (
        set(by_path[0])
        == set(by_path[1])
        == {
            f"/etc/ssh/ssh_host_{t}_key{s}"
            for t in ("rsa", "ecdsa", "ed25519")
            for s in ("", ".pub")
        }
    )
    for path in by_path[0]:
        assert by_path[0][path] != by_path[1][path], path
    assert by_path[1]["/etc/ssh/ssh_host_rsa_key.pub"].startswith(b"ssh-rsa ")
    assert by_path[1]["/etc/ssh/ssh_host_rsa_key.pub"].endswith(b" root@b\n")
