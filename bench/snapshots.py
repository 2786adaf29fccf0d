"""Snapshot benchmarks: memory snapshot create and restore, warm launch, forks per second.

    .venv/bin/python -m bench.snapshots [--rounds 3] [--warm-rounds 5]

Run as root. Each figure is measured against plain QEMU in the same run:

* **memory snapshot create / restore** of a booted tiny guest with 256 MiB and
  1 GiB of RAM, 3/8 of it filled with non-zero data (so the stream is not just
  zero pages). hangar: ``hangar snapshot create VM S --memory`` and ``hangar
  snapshot restore VM S --force`` through the API (operations, waited for).
  Plain, by hand, the same primitives on a QEMU started with hangar's own argv:
  ``stop``, ``qemu-img create -u`` overlay, ``blockdev-add`` +
  ``blockdev-snapshot``, ``migrate`` to an fd passed with ``getfd``, ``cont``;
  restore: kill QEMU, ``qemu-img create`` overlay of the frozen layer, start
  QEMU with ``-incoming defer``, ``migrate-incoming`` from the file, ``cont``.
  Bar: hangar <= 1.2x plain. For reference, QEMU's internal ``snapshot-save`` /
  ``snapshot-load`` jobs (RAM into the qcow2; unusable with UEFI's pflash vars)
  are timed on the same plain QEMU.
* **warm launch -> ready** vs **cold boot -> ready** of the same warm template
  (tiny): ``POST /1.0/vms`` (``cold=true`` for the boot) until the guest answers
  HTTP on its forwarded port. Bar: warm under 1 s.
* **forks per second**: ``hangar fork VM --count N`` (warm publish + N warm
  launches) for N = 1 and 5; the marginal time per fork is (t5 - t1) / 4.

Writes ``bench/results/snapshots.json`` and ``snapshots.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from qemu.qmp import QMPClient

from bench.guests import ssh_ready
from bench.launch import Hangard, free_port, git_info, host_facts, kill_processes_under
from hangar.client.client import Client
from hangar.services.qemu.argv import VMFiles, render_argv
from hangar.spec.host import HostFacts
from hangar.spec.image import ImageManifest
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMCreate
from tests.support.guest_console import GuestConsole

BENCH_DIR = Path(__file__).parent
MARKER = "HANGAR-BOOT-COMPLETE"
MiB = 1024 * 1024
SIZES = {"256M": 256 * MiB, "1G": 1024 * MiB}
POLL = 0.005
BAR_SNAPSHOT = 1.2
BAR_WARM_S = 1.0
BAR_SPEEDUP = 30.0  # cold debian-12 boot / warm launch


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def fill_command(memory: int) -> str:
    """Fill 3/8 of the guest's RAM (tmpfs) with non-zero bytes: one MiB made by ``yes``,
    then copied with ``cat`` (a ``yes | head`` pipe of 384 MiB takes minutes under TCG)."""
    mib = memory * 3 // 8 // MiB
    return (
        "yes hangar-bench | head -c 1048576 > /dev/shm/one;"
        f" i=0; while [ $i -lt {mib} ]; do cat /dev/shm/one; i=$((i+1)); done > /dev/shm/fill;"
        " rm /dev/shm/one; echo filled"
    )


def wait_file_marker(path: Path, marker: str, timeout: float, seen: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes().count(marker.encode()) > seen:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{marker} not in {path} in {timeout} s")


# --- plain QEMU, by hand -------------------------------------------------------------------


class Plain:
    """One plain QEMU with hangar's argv, driven by hand over qemu.qmp."""

    def __init__(self, root: Path, manifest: ImageManifest, image_dir: Path, host: HostFacts):
        self.root = root
        self.manifest = manifest
        self.image_dir = image_dir
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None

    def setup(self, memory: int) -> None:
        self.config = resolve(
            VMCreate(name="plain", image="tiny", memory=memory),
            self.manifest,
            self.host,
            vm_id=uuid.uuid4().hex,
            kernel_path=str(self.image_dir / (self.manifest.kernel or "")),
            initrd_path=str(self.image_dir / self.manifest.initrd)
            if self.manifest.initrd
            else None,
        )
        self.files = VMFiles(dir=self.root / "vm", runtime=self.root / "run")
        self.files.dir.mkdir(parents=True)
        self.files.runtime.mkdir(parents=True)
        self.top = self.files.disk  # the file the VM writes now
        self.frozen: Path | None = None
        self.memfile: Path | None = None
        _run(
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(self.image_dir / self.manifest.disk),
            str(self.top),
            str(self.config.disk_size),
        )

    async def start(self, *, incoming: Path | None) -> None:
        files = VMFiles(dir=self.files.dir, runtime=self.files.runtime, active_disk=self.top)
        argv = render_argv(self.config, self.host, files, incoming=incoming is not None)
        for stale in (files.qmp_socket, files.console_socket, files.pidfile):
            stale.unlink(missing_ok=True)
        with files.qemu_log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.qmp = QMPClient("bench-plain")
        while True:
            if files.qmp_socket.exists():
                try:
                    await self.qmp.connect(str(files.qmp_socket))
                    break
                except Exception:  # QEMU still starting
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(files.qemu_log.read_text()[-2000:])
            await asyncio.sleep(0.002)
        if incoming is not None:
            await self._send_fd(incoming, os.O_RDONLY, "mem")
            await self.qmp.execute("migrate-incoming", {"uri": "fd:mem"})
            while (await self.status()) == "inmigrate":
                await asyncio.sleep(POLL)
        await self.qmp.execute("cont")

    async def status(self) -> str:
        assert self.qmp is not None
        reply = cast(dict[str, Any], await self.qmp.execute("query-status"))
        return str(reply["status"])

    async def _send_fd(self, path: Path, flags: int, name: str) -> None:
        assert self.qmp is not None
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            self.qmp.send_fd_scm(fd)
            await self.qmp.execute("getfd", {"fdname": name})
        finally:
            os.close(fd)

    async def snapshot(self) -> float:
        """stop, external disk snapshot, migrate to a file, cont: seconds taken."""
        assert self.qmp is not None
        folder = self.root / uuid.uuid4().hex[:8]
        folder.mkdir()
        t0 = time.perf_counter()
        await self.qmp.execute("stop")
        blocks = cast(list[dict[str, Any]], await self.qmp.execute("query-block"))
        top_node = str(blocks[0]["inserted"]["node-name"])
        overlay = self.files.dir / f"disk-{uuid.uuid4().hex[:8]}.qcow2"
        _run(
            "qemu-img",
            "create",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(self.top),
            str(overlay),
            str(self.config.disk_size),
        )
        node = f"ov-{uuid.uuid4().hex[:8]}"
        await self.qmp.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": node,
                "backing": None,
                "file": {"driver": "file", "filename": str(overlay)},
            },
        )
        await self.qmp.execute("blockdev-snapshot", {"node": top_node, "overlay": node})
        await self.qmp.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        memfile = folder / "memory.bin"
        await self._send_fd(memfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "snap")
        await self.qmp.execute("migrate", {"uri": "fd:snap"})
        while True:
            info = cast(dict[str, Any], await self.qmp.execute("query-migrate"))
            if info.get("status") == "completed":
                break
            if info.get("status") in ("failed", "cancelled"):
                raise RuntimeError(f"plain migrate: {info}")
            await asyncio.sleep(POLL)
        await self.qmp.execute("cont")
        elapsed = time.perf_counter() - t0
        self.frozen, self.top, self.memfile = self.top, overlay, memfile
        return elapsed

    async def restore(self) -> float:
        """kill QEMU, overlay of the frozen layer, QEMU -incoming, load, cont."""
        assert self.frozen is not None and self.memfile is not None
        t0 = time.perf_counter()
        await self.kill()
        overlay = self.files.dir / f"disk-{uuid.uuid4().hex[:8]}.qcow2"
        _run(
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(self.frozen),
            str(overlay),
            str(self.config.disk_size),
        )
        self.top = overlay
        await self.start(incoming=self.memfile)
        return time.perf_counter() - t0

    async def internal(self, tag: str) -> tuple[float, float]:
        """QEMU's internal snapshot-save and snapshot-load jobs: seconds each."""
        assert self.qmp is not None
        blocks = cast(list[dict[str, Any]], await self.qmp.execute("query-block"))
        node = str(blocks[0]["inserted"]["node-name"])
        times = []
        for command in ("snapshot-save", "snapshot-load"):
            job = f"{command}-{tag}"
            t0 = time.perf_counter()
            await self.qmp.execute(
                command, {"job-id": job, "tag": tag, "vmstate": node, "devices": [node]}
            )
            while True:
                jobs = cast(list[dict[str, Any]], await self.qmp.execute("query-jobs"))
                mine = next(j for j in jobs if j["id"] == job)
                if mine["status"] == "concluded":
                    if mine.get("error"):
                        raise RuntimeError(mine["error"])
                    break
                await asyncio.sleep(POLL)
            times.append(time.perf_counter() - t0)
            await self.qmp.execute("job-dismiss", {"id": job})
        if (await self.status()) != "running":
            await self.qmp.execute("cont")
        return times[0], times[1]

    def console(self, command: str) -> None:
        """Type ``command`` on the serial console and wait for its echo of 'filled'."""
        seen = self.files.serial_log.read_bytes().count(b"\nfilled")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.files.console_socket))
            sock.sendall(f"\n{command}\n".encode())
            deadline = time.monotonic() + 900
            while self.files.serial_log.read_bytes().count(b"\nfilled") <= seen:
                if time.monotonic() > deadline:
                    raise TimeoutError("plain guest did not fill its memory")
                time.sleep(0.1)

    async def kill(self) -> None:
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await self.qmp.disconnect()
            self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)


# --- the benchmarks ----------------------------------------------------------------------


def hangar_fill(client: Client, name: str, memory: int) -> None:
    console = GuestConsole(client.console(name))
    try:
        console.send("\n")
        console.run(fill_command(memory), timeout=900)
    finally:
        console.close()


def timed_op(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_memory_snapshots(
    client: Client, home: Path, host: HostFacts, rounds: int
) -> dict[str, Any]:
    images = home / "lib" / "images" / "tiny"
    manifest = ImageManifest.model_validate_json((images / "image.json").read_text())
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {}
    try:
        for label, memory in SIZES.items():
            name = f"bs-{label.lower()}"
            client.launch({"name": name, "image": "tiny", "memory": memory})
            plain = Plain(home / f"plain-{label}", manifest, images, host)
            plain.setup(memory)
            loop.run_until_complete(plain.start(incoming=None))
            try:
                wait_file_marker(plain.files.serial_log, MARKER, 120)
                wait_file_marker(Path(client.vm(name)["serial_log"]), MARKER, 120)
                hangar_fill(client, name, memory)
                plain.console(fill_command(memory))
                sides: dict[str, list[float]] = {
                    k: []
                    for k in (
                        "hangar_create",
                        "plain_create",
                        "hangar_restore",
                        "plain_restore",
                        "internal_save",
                        "internal_load",
                    )
                }
                for i in range(rounds):
                    tag = f"s{i}"
                    sides["hangar_create"].append(
                        timed_op(lambda: client.create_snapshot(name, tag, memory=True))  # noqa: B023
                    )
                    sides["plain_create"].append(loop.run_until_complete(plain.snapshot()))
                    sides["hangar_restore"].append(
                        timed_op(lambda: client.restore_snapshot(name, tag, force=True))  # noqa: B023
                    )
                    sides["plain_restore"].append(loop.run_until_complete(plain.restore()))
                    save, load = loop.run_until_complete(plain.internal(f"t{i}"))
                    sides["internal_save"].append(save)
                    sides["internal_load"].append(load)
                stream = max(s["size"] for s in client.snapshots(name))
            finally:
                loop.run_until_complete(plain.kill())
                client.delete(name, force=True)
            summary = {k: stats(v) for k, v in sides.items()}
            ratios = {
                "create": summary["hangar_create"]["median"] / summary["plain_create"]["median"],
                "restore": summary["hangar_restore"]["median"] / summary["plain_restore"]["median"],
                "create_vs_internal_save": summary["hangar_create"]["median"]
                / summary["internal_save"]["median"],
                "restore_vs_internal_load": summary["hangar_restore"]["median"]
                / summary["internal_load"]["median"],
            }
            out[label] = {
                "memory": memory,
                "snapshot_bytes": stream,
                "raw_s": sides,
                "summary_s": summary,
                "ratios": ratios,
                "bars": {
                    k: {
                        "max_ratio": BAR_SNAPSHOT,
                        "ratio": ratios[k],
                        "met": ratios[k] <= BAR_SNAPSHOT,
                    }
                    for k in ("create", "restore")
                },
            }
    finally:
        loop.close()
    return out


def wait_http(port: int, timeout: float = 180) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"no HTTP on port {port} in {timeout} s")


def bench_warm(client: Client, rounds: int) -> dict[str, Any]:
    client.launch({"name": "bw-src", "image": "tiny"})
    try:
        wait_file_marker(Path(client.vm("bw-src")["serial_log"]), MARKER, 120)
        client.publish("bw-src", "bw-warm", warm=True)
    finally:
        client.delete("bw-src", force=True)
    raw: dict[str, list[float]] = {
        "warm_ready": [],
        "warm_api": [],
        "cold_ready": [],
        "cold_api": [],
    }
    try:
        for i in range(rounds):
            for kind in ("warm", "cold"):
                name, port = f"bw-{kind}-{i}", free_port()
                spec = {
                    "name": name,
                    "image": "bw-warm",
                    "nics": [{"forwards": [{"host_port": port, "guest_port": 80}]}],
                }
                t0 = time.perf_counter()
                client.launch(spec, cold=kind == "cold")
                t_api = time.perf_counter()
                t_ready = wait_http(port)
                raw[f"{kind}_api"].append(t_api - t0)
                raw[f"{kind}_ready"].append(t_ready - t0)
                client.delete(name, force=True)
                time.sleep(0.5)
    finally:
        client.delete_image("bw-warm")
    summary = {k: stats(v) for k, v in raw.items()}
    warm = summary["warm_ready"]["median"]
    return {
        "raw_s": raw,
        "summary_s": summary,
        "cold_over_warm": summary["cold_ready"]["median"] / warm,
        "bars": {
            "warm_ready_under_s": {"bar": BAR_WARM_S, "value": warm, "met": warm < BAR_WARM_S}
        },
    }


def sshd_banner(port: int, deadline: float) -> float:
    """Poll until the guest's sshd answers with its banner on ``port``; the monotonic
    time it first did. (Before the guest listens, slirp accepts and closes at once.)"""
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ):
            sock.settimeout(5)
            if sock.recv(64).startswith(b"SSH-"):
                return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError(f"no SSH banner on port {port}")


def bench_warm_debian(client: Client, home: Path, rounds: int) -> dict[str, Any]:
    """debian-12: launch -> ready from a warm template (resume + identity through
    the guest agent) against a cold boot of the same template (kernel, systemd,
    cloud-init). Ready two ways: sshd answers on the VM's forward (its banner), and
    an SSH login runs a command. Warm two ways: resuming the template, and claiming
    a standby VM (``hangar image standby TEMPLATE 1``; each round waits until one is
    ready, as a launch finds it on a host that was not launching a second before).
    Bars: warm under 1 s, and cold / warm at least 30x."""
    key = home / "bench_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    keys = [key.with_suffix(".pub").read_text().strip()]
    client.build_image("debian-12")
    client.launch({"name": "bd-src", "image": "debian-12", "ssh_keys": keys})
    try:
        wait_agent(client, "bd-src")
        client.publish("bd-src", "bd-warm", warm=True)
    finally:
        client.delete("bd-src", force=True)
    kinds = ("standby", "warm", "cold")
    raw: dict[str, list[float]] = {
        f"{kind}_{what}": [] for kind in kinds for what in ("api", "banner", "ready")
    }
    try:
        for i in range(rounds):
            for kind in kinds:
                standby_pid = None
                if kind == "standby":
                    client.set_standby("bd-warm", 1)
                    standby_pid = wait_standby(client, "bd-warm")
                elif kind == "warm":
                    client.set_standby("bd-warm", 0)
                name = f"bd-{kind}-{i}"
                t0 = time.monotonic()
                vm = client.launch(
                    {"name": name, "image": "bd-warm", "ssh_keys": keys}, cold=kind == "cold"
                )
                t_api = time.monotonic()
                # A standby VM claimed only when measuring that.
                if (vm["pid"] == standby_pid) != (kind == "standby"):
                    raise RuntimeError(f"{name}: standby VM claimed: {vm['pid'] == standby_pid}")
                port = next(f["host_port"] for f in vm["forwards"] if f["guest_port"] == 22)
                t_banner = sshd_banner(port, t0 + 900)
                t_ready = ssh_ready(key, port, t0 + 900)
                raw[f"{kind}_api"].append(t_api - t0)
                raw[f"{kind}_banner"].append(t_banner - t0)
                raw[f"{kind}_ready"].append(t_ready - t0)
                client.delete(name, force=True)
                time.sleep(0.5)
    finally:
        client.delete_image("bd-warm")
    summary = {k: stats(v) for k, v in raw.items()}
    bars: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    for kind in ("warm", "standby"):
        prefix = "" if kind == "warm" else "standby_"
        for what in ("banner", "ready"):
            warm = summary[f"{kind}_{what}"]["median"]
            ratio = ratios[f"{prefix}{what}"] = summary[f"cold_{what}"]["median"] / warm
            bars[f"{prefix}{what}_under_s"] = {
                "bar": BAR_WARM_S,
                "value": warm,
                "met": warm < BAR_WARM_S,
            }
            bars[f"{prefix}{what}_cold_over_warm"] = {
                "bar": BAR_SPEEDUP,
                "value": ratio,
                "met": ratio >= BAR_SPEEDUP,
            }
    return {"raw_s": raw, "summary_s": summary, "cold_over_warm": ratios, "bars": bars}


def wait_standby(client: Client, template: str, timeout: float = 300) -> int:
    """Until a standby VM of ``template`` is ready, and the host quiet again; its pid."""
    deadline = time.monotonic() + timeout
    while not (ready := client.standby(template)["ready"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{template}: no standby VM in {timeout} s")
        time.sleep(0.5)
    time.sleep(3)
    vm = next(v for v in client.vms(all_projects=True) if v["name"] == ready[0])
    return int(vm["pid"])


def wait_agent(client: Client, name: str, timeout: float = 900) -> None:
    """Until the guest agent answers and cloud-init has finished."""
    deadline = time.monotonic() + timeout
    while not client.guest_info(name)["agent"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no guest agent in {timeout} s")
        time.sleep(2)
    client.exec(name, ["cloud-init", "status", "--wait"], timeout=timeout)


def bench_forks(client: Client) -> dict[str, Any]:
    client.launch({"name": "bf-src", "image": "tiny", "memory": 128 * MiB})
    out: dict[str, Any] = {}
    try:
        wait_file_marker(Path(client.vm("bf-src")["serial_log"]), MARKER, 120)
        for count in (1, 5):
            t0 = time.perf_counter()
            result = client.fork("bf-src", count, prefix=f"bf{count}")
            elapsed = time.perf_counter() - t0
            out[str(count)] = {"seconds": elapsed, "forks_per_second": count / elapsed}
            for vm in result["vms"]:
                client.delete(vm["name"], force=True)
            client.delete_image(result["template"])
    finally:
        client.delete("bf-src", force=True)
    out["marginal_seconds_per_fork"] = (out["5"]["seconds"] - out["1"]["seconds"]) / 4
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Snapshots (tiny image, TCG)",
        "",
        f"{result['timestamp']}, commit {result['git'].get('commit', '?')[:10]}, "
        f"QEMU {result['host']['qemu_version']}, {result['host']['accelerator']}",
        "",
        "| RAM | step | hangar | plain QEMU by hand | ratio (bar 1.2x) | QEMU internal | "
        "ratio to internal |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in result["memory_snapshots"].items():
        s = m["summary_s"]
        for step, plain, internal, ratio_key, internal_key in (
            (
                "create --memory",
                "plain_create",
                "internal_save",
                "create",
                "create_vs_internal_save",
            ),
            ("restore", "plain_restore", "internal_load", "restore", "restore_vs_internal_load"),
        ):
            hangar_key = "hangar_" + ratio_key
            bar = m["bars"][ratio_key]
            lines.append(
                f"| {label} | {step} | {s[hangar_key]['median']:.3f} s | "
                f"{s[plain]['median']:.3f} s | {bar['ratio']:.2f}x "
                f"{'met' if bar['met'] else 'NOT met'} | {s[internal]['median']:.3f} s | "
                f"{m['ratios'][internal_key]:.2f}x |"
            )
    w = result["warm"]["summary_s"]
    bar = result["warm"]["bars"]["warm_ready_under_s"]
    lines += [
        "",
        "| tiny template | API returns | ready (HTTP answers) |",
        "|---|---|---|",
        f"| warm launch | {w['warm_api']['median']:.3f} s | {w['warm_ready']['median']:.3f} s "
        f"(bar < 1 s: {'met' if bar['met'] else 'NOT met'}) |",
        f"| cold boot | {w['cold_api']['median']:.3f} s | {w['cold_ready']['median']:.3f} s |",
        f"| cold / warm | | {result['warm']['cold_over_warm']:.1f}x |",
        "",
        "| fork | seconds | forks per second |",
        "|---|---|---|",
    ]
    for count in ("1", "5"):
        f = result["forks"][count]
        lines.append(f"| --count {count} | {f['seconds']:.2f} s | {f['forks_per_second']:.2f} |")
    lines.append(
        f"| marginal per fork | {result['forks']['marginal_seconds_per_fork']:.2f} s | "
        f"{1 / result['forks']['marginal_seconds_per_fork']:.2f} |"
    )
    d = result.get("warm_debian")
    if d:
        ds, dbar, ratio = d["summary_s"], d["bars"], d["cold_over_warm"]

        def met(key: str) -> str:
            return "met" if dbar[key]["met"] else "NOT met"

        lines += [
            "",
            "| debian-12 template | API returns | sshd answers (banner) | SSH runs a command |",
            "|---|---|---|---|",
        ]
        for kind, label, prefix in (
            ("standby", "warm, standby VM claimed", "standby_"),
            ("warm", "warm, template resumed", ""),
        ):
            lines.append(
                f"| {label} | {ds[f'{kind}_api']['median']:.3f} s | "
                f"{ds[f'{kind}_banner']['median']:.3f} s "
                f"(bar < 1 s: {met(f'{prefix}banner_under_s')}) | "
                f"{ds[f'{kind}_ready']['median']:.3f} s "
                f"(bar < 1 s: {met(f'{prefix}ready_under_s')}) |"
            )
        lines.append(
            f"| cold boot | {ds['cold_api']['median']:.3f} s | "
            f"{ds['cold_banner']['median']:.3f} s | {ds['cold_ready']['median']:.3f} s |"
        )
        for label, prefix in (("standby", "standby_"), ("resumed", "")):
            lines.append(
                f"| cold / warm ({label}) | | {ratio[f'{prefix}banner']:.1f}x (bar >= "
                f"{BAR_SPEEDUP:g}x: {met(f'{prefix}banner_cold_over_warm')}) | "
                f"{ratio[f'{prefix}ready']:.1f}x (bar >= {BAR_SPEEDUP:g}x: "
                f"{met(f'{prefix}ready_cold_over_warm')}) |"
            )
    lines += ["", "Medians; min/max and raw rounds in snapshots.json.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-rounds", type=int, default=5)
    parser.add_argument("--debian-rounds", type=int, default=2, help="0: skip debian-12")
    parser.add_argument(
        "--skip-memory", action="store_true", help="only the warm, fork and debian-12 parts"
    )
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/hangar-test"))
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="hgn-", dir="/tmp"))
    hangard = Hangard(home, args.cache, trace=False)
    hangard.start()
    try:
        with Client(hangard.socket, timeout=3600) as client:
            client.build_image("tiny")
            info = client.host_info()
            result: dict[str, Any] = {
                "format_version": 1,
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "git": git_info(),
                "host": {k: info[k] for k in ("accelerator", "qemu_version", "cpus")},
                "load_average": os.getloadavg(),
                "settings": {
                    "rounds": args.rounds,
                    "warm_rounds": args.warm_rounds,
                    "debian_rounds": args.debian_rounds,
                },
            }
            result["memory_snapshots"] = (
                {}
                if args.skip_memory
                else bench_memory_snapshots(client, home, host_facts(info), args.rounds)
            )
            result["warm"] = bench_warm(client, args.warm_rounds)
            result["forks"] = bench_forks(client)
            if args.debian_rounds:
                result["warm_debian"] = bench_warm_debian(client, home, args.debian_rounds)
            result["load_average_after"] = os.getloadavg()
    finally:
        hangard.stop()
        kill_processes_under(home)
        shutil.rmtree(home, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "snapshots.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.output_dir / "snapshots.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
