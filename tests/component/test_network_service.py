"""The network service against real netlink in a private namespace, with a recording runner.

Each test body runs in a forked child that unshares its network namespace
(``unshare(CLONE_NEWNET)``): the bridges it makes are real, yet live in a
namespace nobody else sees, which vanishes with the child. nft and dnsmasq go
through the recording runner; a fake dnsmasq (a process whose command line reads
like dnsmasq's) stands in for the daemon so stopping and adoption are real.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hangar.errors import HangarError
from hangar.paths import Paths
from hangar.runner import CommandResult
from hangar.services.net import links
from hangar.services.networks import NetworkService
from hangar.spec.network import NetworkCreate
from hangar.state.db import Database
from hangar.state.networks import NetworkRepository
from hangar.state.vms import VMRepository
from tests.support.fake_net import fake_dnsmasq
from tests.support.recording_runner import RecordingRunner

CLONE_NEWNET = 0x40000000


def in_private_netns(body: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body(home)`` in a forked child inside a fresh, unnamed network namespace."""
    with tempfile.TemporaryDirectory(prefix="hgc-") as home:
        return _in_child(body, Path(home))


def _in_child(body: Callable[[Path], dict[str, Any]], home: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            sender.send(body(home))
        except BaseException as exc:
            sender.send({"child-error": repr(exc)})

    proc = ctx.Process(target=child)
    proc.start()
    result: dict[str, Any] = receiver.recv()
    proc.join(30)
    assert "child-error" not in result, result["child-error"]
    return result


def _service(home: Path, runner: RecordingRunner) -> NetworkService:
    paths = Paths(state=home / "lib", runtime=home / "run")
    paths.ensure()
    db = Database(paths.database)
    return NetworkService(paths, NetworkRepository(db), VMRepository(db), runner)


def _create(service: NetworkService) -> str:
    try:
        asyncio.run(service.create(NetworkCreate(name="lan", type="nat", subnet="10.77.3.0/24")))
    except HangarError as exc:
        return exc.message
    return ""


def test_failed_dnsmasq_start_leaves_no_bridge_row_or_folder() -> None:
    def body(home: Path) -> dict[str, Any]:
        runner = RecordingRunner()
        runner.on(["dnsmasq"], lambda a: CommandResult(tuple(a), 2, "", "dnsmasq: bad config"))
        service = _service(home, runner)
        error = _create(service)
        return {
            "error": error,
            "bridges": links.links_with_prefix("hgb"),
            "rows": len(service.repo.all()),
            "dirs": list((home / "lib" / "networks").glob("*")),
            "nft": runner.commands("nft"),
        }

    got = in_private_netns(body)
    assert "dnsmasq" in got["error"] and "bad config" in got["error"]
    assert got["bridges"] == [] and got["rows"] == 0 and got["dirs"] == []
    assert got["nft"] == []  # the rules were never applied, so nothing to undo there


def test_failed_ruleset_stops_dnsmasq_and_removes_the_bridge() -> None:
    def body(home: Path) -> dict[str, Any]:
        runner = RecordingRunner()
        runner.on(["dnsmasq"], fake_dnsmasq)
        runner.on(["nft"], lambda a: CommandResult(tuple(a), 1, "", "Error: syntax error"))
        service = _service(home, runner)
        error = _create(service)
        pids = [int(p.read_text()) for p in (home / "lib" / "networks").glob("*/dnsmasq.pid")]
        return {
            "error": error,
            "bridges": links.links_with_prefix("hgb"),
            "rows": len(service.repo.all()),
            "dnsmasq_started": len(runner.commands("dnsmasq")),
            "pids": pids,
        }

    got = in_private_netns(body)
    assert "nft -f -" in got["error"] and "syntax error" in got["error"]
    assert got["dnsmasq_started"] == 1
    assert got["bridges"] == [] and got["rows"] == 0 and got["pids"] == []


def test_create_then_delete_and_adoption_after_restart() -> None:
    def body(home: Path) -> dict[str, Any]:
        runner = RecordingRunner()
        runner.on(["dnsmasq"], fake_dnsmasq)
        service = _service(home, runner)
        assert _create(service) == ""
        view = service.get("lan")
        bridge = view.config.bridge
        bridges_after_create = links.links_with_prefix("hgb")
        ruleset = runner.commands("nft")[-1]
        # A second hangard on the same state adopts the running dnsmasq.
        again = _service(home, runner)
        asyncio.run(again.restore())
        adopted = again.get("lan").dnsmasq_pid
        asyncio.run(again.delete("lan"))
        return {
            "bridge": bridge,
            "after_create": bridges_after_create,
            "pid": view.dnsmasq_pid,
            "adopted": adopted,
            "starts": len(runner.commands("dnsmasq")),
            "nft_argv": ruleset,
            "after_delete": links.links_with_prefix("hgb"),
            "pid_alive": Path(f"/proc/{view.dnsmasq_pid}/cmdline").exists()
            and bool(Path(f"/proc/{view.dnsmasq_pid}/cmdline").read_bytes()),
        }

    got = in_private_netns(body)
    assert got["after_create"] == [got["bridge"]]
    assert got["pid"] and got["adopted"] == got["pid"] and got["starts"] == 1
    assert got["nft_argv"] == ("nft", "-f", "-")
    assert got["after_delete"] == [] and not got["pid_alive"]
