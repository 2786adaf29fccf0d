"""A standby VM's sshd warm-up goes through the guest agent: the guest logs in to its
own sshd with a throwaway key that hangard hands over on standard input; hangard
starts no ssh client and opens no connection into the guest. The script itself runs
here with a stand-in ``ssh`` that records what it was given."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hangar.errors import HangarError
from hangar.services.guest_files import SSH_PORT
from hangar.services.qga.agent import GuestAgent
from hangar.services.templates import standby as standby_module
from hangar.services.templates.standby import WARMUP_SCRIPT, warm_up_sshd
from hangar.spec.vm import PortForward
from tests.support.fake_agent import FakeAgent


@pytest.fixture
async def fake(home: Path) -> AsyncIterator[FakeAgent]:
    server = FakeAgent(home / "qga.sock")
    await server.start()
    yield server
    await server.close()


def _view(*, user: str | None = "debian", forwarded: bool = True) -> Any:
    forwards = [PortForward(host_port=40022, guest_port=SSH_PORT)] if forwarded else []
    return SimpleNamespace(forwards=forwards, user=user)


def _no_host_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"hangard started a program on the host: {args}")

    async def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"hangard connected to the guest: {args}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refused)
    monkeypatch.setattr(asyncio, "open_connection", no_connection)


async def test_the_guest_logs_in_to_its_own_sshd_through_the_agent(
    fake: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[list[str], bytes]] = []

    def sh(args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        ran.append((args, stdin))
        return 255, b"", b""  # the login is refused: that is no failure

    fake.programs["sh"] = sh
    _no_host_ssh(monkeypatch)
    await warm_up_sshd(_view(), GuestAgent(fake.path, "standby-1"))
    [(args, stdin)] = ran
    assert args == ["-c", WARMUP_SCRIPT, "hangar-warmup", "debian", str(SSH_PORT)]
    assert stdin.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


async def test_the_login_is_as_root_when_the_vm_names_no_user(fake: FakeAgent) -> None:
    ran: list[list[str]] = []
    fake.programs["sh"] = lambda args, stdin: (ran.append(args), (0, b"", b""))[1]
    await warm_up_sshd(_view(user=None), GuestAgent(fake.path, "standby-1"))
    assert ran[0][3] == "root"


async def test_a_vm_whose_sshd_is_forwarded_nowhere_is_left_alone(fake: FakeAgent) -> None:
    await warm_up_sshd(_view(forwarded=False), GuestAgent(fake.path, "standby-1"))
    assert fake.commands == []


async def test_a_warm_up_that_outlasts_its_timeout_raises_what_make_catches(
    fake: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.programs["sh"] = lambda args, stdin: (0, b"", b"")
    fake.exec_polls = 10**6  # it never ends
    monkeypatch.setattr(standby_module, "WARMUP_TIMEOUT", 0.3)
    with pytest.raises((TimeoutError, HangarError)):
        await warm_up_sshd(_view(), GuestAgent(fake.path, "standby-1"))


def _path(tmp_path: Path, *tools: str) -> Path:
    """A PATH folder with only ``tools`` (the host's) in it: no ssh unless a test adds one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "mktemp", "rm", "printf", *tools):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool} on this host")
        (bin_dir / tool).symlink_to(found)
    (tmp_path / "tmp").mkdir()
    return bin_dir


def _run(
    tmp_path: Path, bin_dir: Path, port: int, ssh_dir: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", WARMUP_SCRIPT, "hangar-warmup", "debian", str(port), str(ssh_dir)],
        input="THE KEY\n",
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "TMPDIR": str(tmp_path / "tmp")},
        timeout=30,
    )


def test_the_script_hands_ssh_the_key_and_the_guests_own_host_keys(tmp_path: Path) -> None:
    bin_dir = _path(tmp_path, "stat")
    record = tmp_path / "record"
    # Records its arguments, the key's mode and content, and the known hosts.
    (bin_dir / "ssh").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}\n'
        'for a in "$@"; do\n'
        '  case "$a" in\n'
        f'    */key) stat -c %a "$a" >> {record}.mode; cat "$a" > {record}.key;;\n'
        f'    UserKnownHostsFile=*) cat "${{a#UserKnownHostsFile=}}" > {record}.known;;\n'
        "  esac\n"
        "done\n"
        "exit 255\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    keys = tmp_path / "etc-ssh"
    keys.mkdir()
    (keys / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAAC3Nz root@standby\n")
    (keys / "ssh_host_rsa_key.pub").write_text("ssh-rsa AAAAB3Nz root@standby\n")
    (keys / "ssh_host_rsa_key").write_text("private: not a known host\n")
    done = _run(tmp_path, bin_dir, 22, keys)
    assert done.returncode == 255, done.stderr  # the login's status
    args = record.read_text().splitlines()
    assert args[-2:] == ["debian@127.0.0.1", "true"]
    assert args[args.index("-p") : args.index("-p") + 2] == ["-p", "22"]
    assert "BatchMode=yes" in args and "IdentitiesOnly=yes" in args
    assert not any("StrictHostKeyChecking" in a for a in args)
    assert "HostKeyAlias=hangar-warmup" in args
    assert Path(f"{record}.key").read_text() == "THE KEY\n"
    assert Path(f"{record}.mode").read_text().strip() == "600"
    assert sorted(Path(f"{record}.known").read_text().splitlines()) == [
        "hangar-warmup ssh-ed25519 AAAAC3Nz root@standby",
        "hangar-warmup ssh-rsa AAAAB3Nz root@standby",
    ]
    # Its folder goes with it.
    assert os.listdir(tmp_path / "tmp") == []


def test_without_ssh_the_script_reads_the_banner_with_perl(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    greeted: list[bool] = []

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        greeted.append(True)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    done = _run(tmp_path, _path(tmp_path, "perl"), port, tmp_path)
    thread.join(10)
    server.close()
    assert done.returncode == 0, done.stderr
    assert greeted == [True]
    assert os.listdir(tmp_path / "tmp") == []
