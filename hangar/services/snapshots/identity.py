"""A resumed warm guest becomes a distinct machine: new hostname, machine-id, MAC (as
the guest sees it), DHCP lease and, where it runs sshd, SSH host keys.

Two ways in, by what the image offers:

* the tiny image's ``hangar-identity`` hook, typed on the serial console;
* qemu-guest-agent (cloud images such as debian-12): :data:`AGENT_SCRIPT` runs
  through ``guest-exec``.

The migration stream carries the virtio-net device's MAC, so the guest keeps the
saved one until it is told: both ways set the new MAC inside the guest.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from hangar.errors import HangarError, QemuFailed
from hangar.services.qemu.argv import VMFiles
from hangar.services.qga.agent import GuestAgent

IDENTITY_TIMEOUT = 60.0  # TCG on a loaded host: a DHCP exchange can take seconds
DONE = "HANGAR-IDENTITY-DONE"

# $1 name, $2 saved MAC, $3 new MAC, $4 machine-id, $5 host randomness (hex).
# POSIX sh, in one guest-exec.
# Every VM resumed from one template starts with the same kernel random state, so
# it would make the same SSH host keys: the host's bytes go into the pool and the
# CRNG is reseeded from it (ioctl RNDRESEEDCRNG) before anything secret is made.
# cloud-init's networkd files match the NIC by MAC: they follow it, and networkd
# restarts so its DHCP client identity (derived from the machine-id) is new too.
AGENT_SCRIPT = r"""
set -eu
name=$1 old=$2 new=$3 mid=$4 seed=$5
python3 -c 'import fcntl, os, sys
fd = os.open("/dev/urandom", os.O_WRONLY)
os.write(fd, bytes.fromhex(sys.argv[1]))
fcntl.ioctl(fd, 0x5207)
' "$seed"
nic=
for dev in /sys/class/net/*; do
    if [ "$(cat "$dev/address")" = "$old" ]; then nic=${dev##*/}; fi
done
[ -n "$nic" ] || { echo "no NIC with MAC $old" >&2; exit 3; }
hostname "$name"
echo "$name" > /etc/hostname
if grep -q '^127\.0\.1\.1' /etc/hosts; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1 $name/" /etc/hosts
else
    echo "127.0.1.1 $name" >> /etc/hosts
fi
echo "$mid" > /etc/machine-id
if [ -d /etc/ssh ] && command -v ssh-keygen >/dev/null; then
    # Ed25519 and ECDSA: milliseconds. RSA would take seconds under TCG and a
    # later sshd reload would refuse connections for a moment; cloud-init makes it
    # at the guest's next boot (a new instance then).
    rm -f /etc/ssh/ssh_host_*
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
    ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key
    systemctl try-restart ssh.service 2>/dev/null || true
fi
for dir in /etc/systemd/network /run/systemd/network; do
    if [ -d "$dir" ]; then
        grep -rl -i "$old" "$dir" | xargs -r sed -i "s/$old/$new/Ig"
    fi
done
ip link set dev "$nic" down
ip link set dev "$nic" address "$new"
ip link set dev "$nic" up
systemctl restart systemd-networkd.service
i=0
while ! ip -4 -o addr show dev "$nic" scope global | grep -q inet; do
    i=$((i + 1))
    [ $i -lt 200 ] || { echo "no DHCP lease on $nic" >&2; exit 4; }
    sleep 0.1
done
ip -4 -o addr show dev "$nic" scope global
"""


async def by_console(files: VMFiles, name: str, mac: str, machine_id: str) -> None:
    """The tiny image's hook; raise :class:`QemuFailed` if the guest does not confirm
    within :data:`IDENTITY_TIMEOUT` seconds."""
    token = uuid.uuid4().hex[:12]
    try:
        reader, writer = await asyncio.open_unix_connection(str(files.console_socket))
    except OSError as exc:
        raise QemuFailed(f"cannot reach the guest's serial console: {exc}") from exc
    try:
        # Ctrl-U first: whatever was half-typed at the saved prompt is dropped.
        writer.write(f"\x15hangar-identity {name} {mac} {machine_id} {token}\n".encode())
        await writer.drain()
        seen = b""
        want = f"{DONE} {token}".encode()
        async with asyncio.timeout(IDENTITY_TIMEOUT):
            while want not in seen:
                chunk = await reader.read(4096)
                if not chunk:
                    raise QemuFailed("the serial console closed before the guest answered")
                seen = seen[-4096:] + chunk
    except TimeoutError as exc:
        raise QemuFailed(
            f"the guest did not confirm its new identity in {IDENTITY_TIMEOUT:g} s",
            hint="a warm template needs an image with the hangar-identity hook (tiny) "
            "or qemu-guest-agent",
        ) from exc
    finally:
        writer.close()


async def by_agent(agent: GuestAgent, name: str, saved_mac: str, mac: str, machine_id: str) -> None:
    """Through qemu-guest-agent: the clock first (the guest slept since the save), then
    :data:`AGENT_SCRIPT`. Raise :class:`QemuFailed` if it fails or the agent is gone."""
    deadline = time.monotonic() + IDENTITY_TIMEOUT
    seed = os.urandom(32).hex()
    try:
        await agent.call("guest-set-time", {"time": time.time_ns()})
        ran = await agent.exec(
            ["sh", "-c", AGENT_SCRIPT, "identity", name, saved_mac, mac, machine_id, seed],
            timeout=max(1.0, deadline - time.monotonic()),
        )
    except HangarError as exc:
        raise QemuFailed(
            f"the guest agent could not give the guest its new identity: {exc.message}",
            hint="a warm template of a cloud image needs qemu-guest-agent running in it",
        ) from exc
    if ran.exit_code != 0:
        raise QemuFailed(
            f"the identity script failed in the guest (exit {ran.exit_code}): "
            f"{ran.stderr.strip() or ran.stdout.strip()}",
            hint="see the guest's journal",
        )
