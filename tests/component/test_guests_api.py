"""Guest routes over HTTP with a fake QEMU: agent exec and info, agent shutdown, screenshots,
the VNC proxy, ISO launches and detach, seeds and UEFI variable stores in the VM folder."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.services.platform import Platform
from hangar.services.storage.seed import read_seed_iso
from tests.component.conftest import PlatformFactory, install_image
from tests.support.apps import BothListeners
from tests.support.factories import debian_manifest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxComponentKeyComponentKeyComponent00 me@host"


@pytest.fixture
def platform(make_platform: PlatformFactory) -> Platform:
    platform = make_platform(FAKE_QEMU_POWERDOWN="ignore")
    install_image(platform.paths, debian_manifest())
    return platform


@pytest.fixture
def api(platform: Platform) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(platform))) as client:
        yield client


def _iso(path: Path) -> Path:
    data = bytearray(18 * 2048)
    data[16 * 2048 : 16 * 2048 + 6] = b"\x01CD001"
    path.write_bytes(bytes(data))
    return path


def test_a_cloud_vm_gets_a_seed_an_ssh_forward_and_an_agent(
    api: TestClient, platform: Platform
) -> None:
    made = api.post("/1.0/vms", json={"name": "deb", "image": "debian-12", "ssh_keys": [KEY]})
    assert made.status_code == 201, made.text
    vm = made.json()
    assert vm["user"] == "debian" and vm["ssh_keys"] == [KEY] and vm["agent"]
    [ssh] = [f for f in vm["forwards"] if f["guest_port"] == 22]
    assert ssh["host_address"] == "127.0.0.1" and ssh["host_port"] > 0
    seed = read_seed_iso(platform.paths.vm_dir(vm["id"]) / "seed.iso")
    assert KEY.encode() in seed["meta-data"] and b'"local-hostname": "deb"' in seed["meta-data"]

    ran = api.post("/1.0/vms/deb/exec", json={"command": ["echo", "hi", "there"]})
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 0 and ran.json()["stdout"] == "hi there\n"
    fed = api.post(
        "/1.0/vms/deb/exec", json={"command": ["cat"], "input": base64.b64encode(b"in").decode()}
    )
    assert fed.json()["stdout"] == "in"
    failed = api.post("/1.0/vms/deb/exec", json={"command": ["false"]}).json()
    assert failed["exit_code"] == 3 and failed["stderr"] == "it failed\n"

    info = api.get("/1.0/vms/deb/guest").json()
    assert info["agent"] and info["hostname"] == "fakeguest" and info["os"] == "Fake OS 1"
    assert [a["address"] for a in info["addresses"]] == ["10.0.2.15"]

    # The fake guest ignores ACPI: half the timeout later the agent powers it off.
    stopped = api.post("/1.0/vms/deb/stop", json={"timeout": 2}).json()
    assert stopped["method"] == "agent" and stopped["vm"]["state"] == "stopped"
    assert "agent" in stopped["vm"]["state_reason"]
    assert api.get("/1.0/vms/deb/guest").json() == {
        "agent": False,
        "reason": "the VM is stopped",
        "hostname": None,
        "os": None,
        "kernel": None,
        "addresses": [],
    }
    refused = api.post("/1.0/vms/deb/exec", json={"command": ["echo"]})
    assert refused.status_code == 409 and refused.json()["details"]["state"] == "stopped"


def test_a_vm_without_agent_says_so(api: TestClient) -> None:
    api.post("/1.0/vms", json={"name": "web", "image": "tiny"})
    refused = api.post("/1.0/vms/web/exec", json={"command": ["true"]})
    assert refused.status_code == 409 and "no guest agent" in refused.json()["message"]
    assert api.get("/1.0/vms/web/guest").json()["agent"] is False
    assert api.get("/1.0/vms/web/screenshot").status_code == 409


def test_uefi_vm_owns_its_variable_store(api: TestClient, platform: Platform) -> None:
    vars_template = platform.paths.state / "OVMF_VARS.fd"
    vars_template.write_bytes(b"vars" * 1024)
    platform.vms.host = platform.vms.local.host = platform.host = type(platform.host)(
        **{**platform.host.__dict__, "ovmf_code": "/dev/null", "ovmf_vars": str(vars_template)}
    )
    made = api.post(
        "/1.0/vms", json={"name": "efi", "image": "debian-12", "firmware": "uefi", "start": False}
    )
    assert made.status_code == 201, made.text
    folder = platform.paths.vm_dir(made.json()["id"])
    assert (folder / "efivars.fd").read_bytes() == vars_template.read_bytes()
    assert made.json()["firmware"] == "uefi" and made.json()["machine"] == "q35"
    assert api.delete("/1.0/vms/efi").status_code == 204
    assert not folder.exists()


def test_iso_install_screen_vnc_and_detach(api: TestClient, platform: Platform, home: Path) -> None:
    iso = _iso(home / "installer.iso")
    made = api.post("/1.0/vms", json={"name": "inst", "iso": str(iso), "disk": "8G"})
    assert made.status_code == 201, made.text
    vm = made.json()
    assert (vm["iso"], vm["image"], vm["firmware"], vm["graphics"]) == (
        "installer.iso", "", "bios", True
    )  # fmt: skip
    runtime = platform.paths.vm_runtime(vm["id"])
    assert (runtime / "vnc.sock").stat().st_mode & 0o777 == 0o600
    assert runtime.stat().st_mode & 0o777 == 0o700

    shot = api.get("/1.0/vms/inst/screenshot")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert shot.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(runtime.glob("screen-*.png"))  # QEMU's file is not left behind

    with api.websocket_connect("/1.0/vms/inst/vnc") as ws:
        assert ws.receive_bytes() == b"RFB 003.008\n"
        ws.send_bytes(b"RFB 003.008\n")
        assert ws.receive_bytes() == b"RFB 003.008\n"

    busy = api.post("/1.0/vms/inst/iso/detach")
    assert busy.status_code == 409 and busy.json()["details"]["state"] == "running"
    # The installer powers the guest off: hangard detaches the ISO by itself.
    pid = platform.vms.supervisor.get(vm["id"]).pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while api.get("/1.0/vms/inst").json()["state"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    after = api.get("/1.0/vms/inst").json()
    assert after["state"] == "stopped" and after["iso"] is None
    assert "installer ISO 'installer.iso' detached" in after["state_reason"]
    assert not (platform.paths.vm_dir(vm["id"]) / "install.iso").exists()
    assert iso.exists()  # the user's file is theirs
    again = api.post("/1.0/vms/inst/iso/detach")
    assert again.status_code == 409 and "no ISO" in again.json()["message"]


def test_iso_must_be_an_iso_and_only_the_host_admin_may_attach_one(
    api: TestClient, home: Path
) -> None:
    plain = home / "notes.txt"
    plain.write_text("hello")
    refused = api.post("/1.0/vms", json={"name": "x", "iso": str(plain), "disk": "1G"})
    assert refused.status_code == 400 and "not an ISO 9660" in refused.json()["message"]
    iso = _iso(home / "i.iso")
    api.post("/1.0/projects", json={"name": "alpha"})
    token = api.post(
        "/1.0/tokens", params={"project": "alpha"}, json={"role": "admin", "name": "a"}
    ).json()["secret"]
    forbidden = api.post(
        "/1.0/vms",
        json={"name": "x", "iso": str(iso), "disk": "1G"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert forbidden.status_code == 403 and "host administrator" in forbidden.json()["message"]
