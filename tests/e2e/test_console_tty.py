"""`hangar console` in a real terminal (tmux): typing reaches the guest, Ctrl-] detaches."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.daemon import BIN, Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]
SESSION = "hangar-console-test"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_screen(text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        shown = screen()
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not on the terminal in {timeout} s:\n{shown}")
        time.sleep(0.1)


@pytest.fixture
def tty_vm(daemon: Daemon) -> Iterator[str]:
    name = "tty-vm"
    result = daemon.cli("launch", "tiny", name, "--memory", "128M", "--wait")
    assert result.code == 0, result
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in daemon.env.items() if k.startswith("HANGAR"))
    # A shell stays after the console exits, so its exit message can be read.
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "30", "bash --norc")
    tmux(
        "send-keys",
        "-t",
        SESSION,
        f"env {env} {BIN / 'hangar'} console {name}; echo RC=$?",
        "Enter",
    )
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        daemon.cli("delete", name, "--force")


def test_typing_reaches_the_guest_and_ctrl_bracket_detaches(tty_vm: str) -> None:
    wait_screen("detach with Ctrl-]")
    tmux("send-keys", "-t", SESSION, "echo typed-$((6*7))", "Enter")
    wait_screen("typed-42")
    tmux("send-keys", "-t", SESSION, "C-]")
    shown = wait_screen("RC=0")
    assert "detached" in shown
    # the terminal is back to normal (not raw): the shell echoes and runs commands
    tmux("send-keys", "-t", SESSION, "echo back-$((1+1))", "Enter")
    wait_screen("back-2")
