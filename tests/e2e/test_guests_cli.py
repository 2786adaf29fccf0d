"""debian-12 through the CLI: launched with the caller's SSH key (from ~/.ssh), then
`hangar exec`, `hangar shell -- CMD` (SSH), `hangar info` (agent), and a stop that the
guest agent finishes when the guest ignores the ACPI power button."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import Client
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for_agent

pytestmark = [pytest.mark.e2e, pytest.mark.qemu, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def deb(daemon: Daemon, debian_image: str, ssh_home: Path) -> Iterator[str]:
    # No --ssh-key: the CLI takes ~/.ssh/id_ed25519.pub, as for a person.
    launched = daemon.cli("launch", debian_image, "deb", env={"HOME": str(ssh_home)})
    assert launched.code == 0, launched
    assert "hangar shell deb" in launched.stdout
    try:
        with daemon.client() as client:
            wait_for_agent(client, "deb")
        yield "deb"
    finally:
        daemon.cli("delete", "--force", "deb")


def test_exec_returns_output_and_exit_code(daemon: Daemon, deb: str) -> None:
    ran = daemon.cli("exec", deb, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (ran.code, ran.stdout, ran.stderr) == (7, "out\n", "err\n"), ran


def test_shell_runs_over_ssh_as_the_cloud_init_user(
    daemon: Daemon, deb: str, ssh_home: Path
) -> None:
    env = {"HOME": str(ssh_home)}
    words = ["echo", "$(id -un)@$(hostname)", "via", "${SSH_CONNECTION%% *}"]
    ran = daemon.cli("shell", deb, "--", *words, env=env)
    assert ran.code == 0, ran
    assert ran.stdout == "debian@deb via 10.0.2.2\n", ran
    assert "no SSH" not in ran.stderr
    sudo = daemon.cli("shell", deb, "--", "sudo", "-n", "id", "-u", env=env)
    assert sudo.stdout == "0\n", sudo


def test_shell_falls_back_to_the_agent(daemon: Daemon, deb: str, tmp_path: Path) -> None:
    # No key in this HOME matches the VM's: no SSH, so the agent runs it (as root).
    ran = daemon.cli("shell", deb, "--", "id", "-un", env={"HOME": str(tmp_path)})
    assert ran.code == 0 and ran.stdout == "root\n", ran
    assert "using the guest agent" in ran.stderr


def test_info_shows_what_the_agent_reports(daemon: Daemon, client: Client, deb: str) -> None:
    info = daemon.cli("info", deb, "--format", "json")
    assert info.code == 0, info
    guest = json.loads(info.stdout)["guest"]
    assert guest["agent"] and guest["hostname"] == "deb"
    assert "Debian GNU/Linux 12" in guest["os"]
    assert "10.0.2.15" in [a["address"] for a in guest["addresses"]]


def test_stop_uses_the_agent_when_acpi_is_ignored(daemon: Daemon, deb: str) -> None:
    ignore = (
        "mkdir -p /etc/systemd/logind.conf.d && "
        "printf '[Login]\\nHandlePowerKey=ignore\\n' > /etc/systemd/logind.conf.d/t.conf && "
        "systemctl restart systemd-logind"
    )
    assert daemon.cli("exec", deb, "--", "sh", "-c", ignore).code == 0
    stopped = daemon.cli("stop", deb, "--timeout", "240", timeout=400)
    assert stopped.code == 0, stopped
    assert "shut down when its agent asked" in " ".join(stopped.stdout.split()), stopped
