"""Remote access against a real hangard serving HTTPS on 127.0.0.1: tokens, the
certificate trusted on first use (and a changed one refused), the CLI on a remote,
the console and the event stream over TLS."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hangar.api.tls import generate
from hangar.certs import fingerprint
from hangar.client.client import ApiError, Client
from hangar.client.remotes import Remote, fetch_certificate
from tests.support.daemon import Daemon, kill_vm_processes
from tests.support.guest_console import GuestConsole
from tests.support.waiting import free_port

pytestmark = [pytest.mark.e2e]


def remote_for(daemon: Daemon, token: str, name: str = "r") -> Remote:
    pem = fetch_certificate(daemon.url)
    return Remote(
        name=name, url=daemon.url, token=token, certificate=pem, fingerprint=fingerprint(pem)
    )


def new_token(daemon: Daemon, role: str, project: str = "default") -> str:
    made = daemon.cli(
        "token", "create", "--project", project, "--role", role, "--name", f"t-{role}"
    )
    assert made.code == 0, made
    return made.stdout.strip()


@pytest.fixture
def lone_daemon() -> Iterator[Daemon]:
    """A hangard of its own (its certificate gets replaced), HTTPS on a free loopback port."""
    home = Path(tempfile.mkdtemp(prefix="hgr-", dir="/tmp"))
    hangard = Daemon(home, listen_port=free_port())
    hangard.start()
    try:
        yield hangard
    finally:
        hangard.stop()
        kill_vm_processes(home)
        shutil.rmtree(home, ignore_errors=True)


def test_certificate_trust_on_first_use_and_a_changed_one_refused(lone_daemon: Daemon) -> None:
    d = lone_daemon
    token = new_token(d, "admin")
    logged = re.search(r"fingerprint ([0-9A-F:]{95})", d.log.read_text())
    assert logged, d.log.read_text()
    cert = d.home / "lib" / "tls" / "server.crt"
    assert (
        cert.stat().st_mode & 0o777,
        (d.home / "lib/tls/server.key").stat().st_mode & 0o777,
    ) == (
        0o600,
        0o600,
    )

    declined = d.cli("remote", "add", "far", d.url, "--token", token, input_text="n\n")
    assert declined.code != 0 and logged.group(1) in declined.stderr, declined
    assert "far" not in d.cli("remote", "list").stdout

    added = d.cli("remote", "add", "far", d.url, "--token", token, input_text="y\n")
    assert added.code == 0 and "admin" in added.stdout, added
    remotes = json.loads(d.cli("remote", "list", "--format", "json").stdout)
    assert remotes["remotes"][0]["fingerprint"] == logged.group(1)
    config = d.config_home / "hangar" / "remotes.json"
    assert config.stat().st_mode & 0o777 == 0o600

    forbidden = d.cli("--remote", "far", "project", "create", "blue")
    assert forbidden.code == 7 and "host administrator" in forbidden.stderr, forbidden
    assert d.cli("remote", "switch", "far").code == 0
    listed = d.cli("project", "list", "--format", "json")
    assert listed.code == 0 and [p["name"] for p in json.loads(listed.stdout)] == ["default"]

    # The server gets another certificate (same address): the CLI refuses it.
    d.stop()
    other = d.home / "other"
    generate(other / "server.crt", other / "server.key", ["127.0.0.1"])
    d.args = ["--cert", str(other / "server.crt"), "--key", str(other / "server.key")]
    d.start()
    refused = d.cli("list")
    assert refused.code == 8, refused
    assert (
        "has changed" in refused.stderr
        and fingerprint((other / "server.crt").read_text()) in refused.stderr
    )

    # Removing and re-adding (on purpose) trusts the new one.
    assert d.cli("remote", "remove", "far").code == 0
    again = d.cli("remote", "add", "far", d.url, "--token", token, "--accept-certificate")
    assert again.code == 0, again
    assert d.cli("--remote", "far", "list").code == 0


def test_tcp_requests_need_a_valid_token(daemon: Daemon) -> None:
    token = new_token(daemon, "viewer")
    with httpx.Client(base_url=daemon.url, verify=False, timeout=10) as http:
        assert http.get("/1.0/vms").status_code == 401
        assert (
            http.get("/1.0/vms", headers={"Authorization": "Bearer hgr_forged"}).status_code == 401
        )
        assert http.get("/openapi.json").status_code == 200  # the schema is public
        ok = http.get("/1.0/vms", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        denied = http.post("/1.0/vms/anything/start", headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden"


@pytest.mark.qemu
def test_launch_console_and_events_over_tls(daemon: Daemon) -> None:
    with daemon.client() as local:
        if "teal" not in [p["name"] for p in local.projects()]:
            local.create_project("teal", quotas={"max_instances": 1})
    token = new_token(daemon, "operator", "teal")
    remote = remote_for(daemon, token)
    with Client(remote=remote) as client, client.events("lifecycle") as events:
        assert next(events)["type"] == "subscribed"
        vm = client.launch({"name": "far-vm", "image": "tiny", "memory": 128 * 1024**2})
        try:
            assert vm["project"] == "teal"
            with pytest.raises(ApiError) as over:
                client.launch({"name": "second", "image": "tiny", "memory": 128 * 1024**2})
            assert over.value.status == 422 and "limit 1, in use 1" in over.value.message
            client.wait_for_boot("far-vm", vm["boot_marker"], timeout=120)
            console = GuestConsole(client.console("far-vm"))
            console.send("\n")
            assert "remote-42" in console.run("echo remote-$((6*7))")
            console.close()
            states = []
            for event in events:
                states.append(event["data"]["state"])
                if event["data"]["state"] == "running":
                    break
            assert states == ["stopped", "starting", "running"]
        finally:
            client.delete("far-vm", force=True)
    # the default project's token cannot see it: 404, as if it did not exist
    with Client(remote=remote_for(daemon, new_token(daemon, "admin"))) as other:
        with pytest.raises(ApiError) as hidden:
            other.vm("far-vm")
        assert hidden.value.status == 404
