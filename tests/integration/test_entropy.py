"""Real QEMU on the tiny image: clones of one saved guest do not share its randomness.

Two VMs launched warm from one template resume the same saved kernel, CRNG state
included; vmgenid (q35) makes each guest kernel reseed the moment it is loaded, so
what each reads from /dev/urandom right after its launch shares nothing with the
other's (or the source's). See hangar/services/qemu/argv.py (_entropy_args) for why q35.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.guest_console import guest
from tests.support.waiting import wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024


def urandom(client: Client, name: str) -> set[str]:
    """The first 4 bytes of each of 128 reads of 16 bytes from the guest's
    /dev/urandom, in one process (the serial console is slow under TCG).

    Linux answers each read of <= 32 bytes from one step of its CRNG's key chain, so
    two guests that share the chain (clones not reseeded) share blocks even when
    other readers in one of them (ASLR, udhcpc) have moved it on by a few steps: the
    first bytes alone differ by luck, the blocks overlap.
    """
    out = guest(
        client,
        name,
        "dd if=/dev/urandom bs=16 count=128 2>/dev/null | od -An -v -tx1 | cut -c2-12"
        " | tr -d ' ' | sed 's/^/R=/'",
        timeout=90,
    )
    blocks = set(re.findall(r"R=([0-9a-f]{8})\b", out))
    assert len(blocks) == 128, out
    return blocks


def delete_quietly(client: Client, *names: str) -> None:
    for name in names:
        with contextlib.suppress(ApiError):
            client.delete(name, force=True)


@dataclass(frozen=True)
class Saved:
    machine: str
    source: str
    template: str


@pytest.fixture(scope="module", params=["q35", "microvm"])
def saved(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[Saved]:
    """A tiny VM booted on each machine type and saved warm. q35 has vmgenid; microvm
    has none, and the tiny identity hook reseeds the kernel (hangar-reseed)."""
    machine = str(request.param)
    source, template = f"en-src-{machine[:3]}", f"en-warm-{machine[:3]}"
    with daemon.client() as client:
        client.launch({"name": source, "image": "tiny", "memory": MEMORY, "machine": machine})
        try:
            wait_for_marker(client, source, MARKER)
            # Until 120 s of uptime Linux reseeds its CRNG every uptime/2 seconds, so
            # clones of a just-booted guest diverge within seconds even with no help;
            # saved later, a clone's next scheduled reseed is up to 60 s away, and
            # only vmgenid (q35) or the identity hook's reseed (microvm) makes its
            # first bytes differ.
            guest(
                client,
                source,
                "while [ $(cut -d. -f1 /proc/uptime) -lt 125 ]; do sleep 1; done",
                timeout=300,
            )
            manifest = client.publish(source, template, warm=True)
            assert manifest["warm"]["memory"]
            yield Saved(machine, source, template)
        finally:
            delete_quietly(client, source)
            with contextlib.suppress(ApiError):
                client.delete_image(template)


def test_the_guest_kernel_has_virtio_rng_and_vmgenid(client: Client, saved: Saved) -> None:
    out = guest(
        client,
        saved.source,
        "echo H=$(cat /sys/class/misc/hw_random/rng_current)=H"
        " V=$(ls /sys/bus/acpi/drivers/vmgenid 2>/dev/null | grep -c :)=V",
    )
    assert re.search(r"H=virtio_rng\.\d+=H", out), out
    # microvm: QEMU 7.2 gives it no vmgenid (see argv._entropy_args).
    assert f"V={1 if saved.machine == 'q35' else 0}=V" in out, out


def test_two_warm_clones_read_different_random_bytes(client: Client, saved: Saved) -> None:
    names = [f"en-a-{saved.machine[:3]}", f"en-b-{saved.machine[:3]}"]
    try:
        seen = {}
        for name in names:
            view = client.launch({"name": name, "image": saved.template})
            assert view["state"] == "running"
            seen[name] = urandom(client, name)  # the first command it runs
        seen[saved.source] = urandom(client, saved.source)
        for a, b in ((names[0], names[1]), (names[0], saved.source), (names[1], saved.source)):
            assert not seen[a] & seen[b], f"{a} and {b} share their CRNG's output"
    finally:
        delete_quietly(client, *names)


def test_two_restores_of_one_memory_snapshot_read_different_random_bytes(
    client: Client, saved: Saved
) -> None:
    """A restore resumes the saved kernel too: vmgenid (q35) or hangard's reseed
    (microvm: the console hook, hangar/services/templates/reseed.py) makes each
    restored guest's first bytes its own."""
    client.create_snapshot(saved.source, "rng", memory=True)
    seen = []
    for _ in range(2):
        client.restore_snapshot(saved.source, "rng", force=True)
        seen.append(urandom(client, saved.source))  # the first command after the restore
    assert not seen[0] & seen[1], "two restores of one snapshot share their CRNG's output"
