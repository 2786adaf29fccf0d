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

import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.guest_console import guest
from tests.support.waiting import wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024
SOURCE = "en-src"
TEMPLATE = "en-warm"


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


@pytest.fixture(scope="module")
def template(daemon: Daemon) -> Iterator[str]:
    with daemon.client() as client:
        client.launch({"name": SOURCE, "image": "tiny", "memory": MEMORY, "machine": "q35"})
        try:
            wait_for_marker(client, SOURCE, MARKER)
            # Until 120 s of uptime Linux reseeds its CRNG every uptime/2 seconds, so
            # clones of a just-booted guest diverge within seconds even with no help;
            # saved later, a clone's next scheduled reseed is up to 60 s away, and
            # only vmgenid makes its first bytes differ.
            guest(
                client,
                SOURCE,
                "while [ $(cut -d. -f1 /proc/uptime) -lt 125 ]; do sleep 1; done",
                timeout=300,
            )
            manifest = client.publish(SOURCE, TEMPLATE, warm=True)
            assert manifest["warm"]["memory"]
            yield TEMPLATE
        finally:
            delete_quietly(client, SOURCE)
            with contextlib.suppress(ApiError):
                client.delete_image(TEMPLATE)


def test_the_guest_kernel_has_virtio_rng_and_vmgenid(client: Client, template: str) -> None:
    out = guest(
        client,
        SOURCE,
        "echo H=$(cat /sys/class/misc/hw_random/rng_current)=H"
        " V=$(ls /sys/bus/acpi/drivers/vmgenid | grep -c :)=V",
    )
    assert re.search(r"H=virtio_rng\.\d+=H", out), out
    assert "V=1=V" in out, out


def test_two_warm_clones_read_different_random_bytes(client: Client, template: str) -> None:
    names = ["en-a", "en-b"]
    try:
        seen = {}
        for name in names:
            assert client.launch({"name": name, "image": template})["state"] == "running"
            seen[name] = urandom(client, name)  # the first command it runs
        seen[SOURCE] = urandom(client, SOURCE)
        for a, b in (("en-a", "en-b"), ("en-a", SOURCE), ("en-b", SOURCE)):
            assert not seen[a] & seen[b], f"{a} and {b} share their CRNG's output"
    finally:
        delete_quietly(client, *names)
