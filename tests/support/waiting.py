"""Waiting for guests: free ports, serial markers, power states."""

from __future__ import annotations

import socket
import time

import httpx

from hangar.client.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_marker(
    client: Client, name: str, marker: str, timeout: float = 60.0, *, occurrence: int = 1
) -> str:
    """Follow the VM's serial log until ``marker`` has appeared ``occurrence`` times
    (the log keeps earlier boots); returns what was read."""
    seen = ""
    deadline = time.monotonic() + timeout
    try:
        with client.follow_logs(name, lines=10000, idle_timeout=timeout) as chunks:
            for chunk in chunks:
                seen += chunk
                if seen.count(marker) >= occurrence:
                    return seen
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    raise AssertionError(f"{marker!r} not on {name}'s serial log in {timeout} s:\n{seen[-3000:]}")


def wait_state(client: Client, name: str, state: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        vm = client.vm(name)
        if vm["state"] == state or time.monotonic() > deadline:
            assert vm["state"] == state, vm
            return vm
        time.sleep(0.05)


def wait_for_agent(client: Client, name: str, timeout: float = 600.0) -> dict[str, object]:
    """Poll until the VM's guest agent answers, then until cloud-init has finished."""
    deadline = time.monotonic() + timeout
    info: dict[str, object] = {}
    while time.monotonic() < deadline:
        info = client.guest_info(name)
        if info["agent"]:
            break
        time.sleep(2)
    assert info.get("agent"), f"{name}: the guest agent never answered: {info}"
    left = max(30.0, deadline - time.monotonic())
    done = client.exec(name, ["cloud-init", "status", "--wait"], timeout=left)
    assert done["exit_code"] == 0, done
    return client.guest_info(name)
