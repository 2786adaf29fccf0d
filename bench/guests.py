"""debian-12 launch -> SSH-ready: hangar against plain QEMU, per boot mode.

    .venv/bin/python -m bench.guests [--rounds N] [--modes direct,bios,uefi]

Run as root. For each boot mode (direct kernel boot on microvm, BIOS and UEFI
from the disk on q35) and each round:

* **hangar**: ``Client.launch()`` of debian-12 with an SSH key (cloud-init seed,
  agent channel, port forward to 22), then ``ssh -i KEY -p PORT debian@127.0.0.1
  true`` every 0.5 s until it succeeds. The clock starts at the API call.
* **plain**: the same QEMU command line — hangar's running QEMU's
  ``/proc/PID/cmdline`` with only its own paths, host port and ``-S`` changed —
  on a fresh linked clone of the same image disk, a copy of the same seed and a
  fresh UEFI variable store, started by hand; the same SSH probe. The clock
  starts before ``qemu-img create``.

Sides are interleaved (hangar, then plain, per round). Writes
``bench/results/guests.json`` and ``guests.md``. Bar (issue 5): hangar ≤ 1.1 x plain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hangar.client.client import Client
from tests.support.daemon import Daemon, kill_vm_processes
from tests.support.waiting import free_port

BENCH_DIR = Path(__file__).parent
MODES = {"direct": None, "bios": "bios", "uefi": "uefi"}
BAR = 1.1
SSH_TIMEOUT = 900.0


def ssh_ready(key: Path, port: int, deadline: float) -> float:
    """Poll SSH until a command runs; the monotonic time it first did."""
    argv = ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
            "debian@127.0.0.1", "true"]  # fmt: skip
    while time.monotonic() < deadline:
        if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
            return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"no SSH on port {port} in {SSH_TIMEOUT} s")


def hangar_round(
    client: Client, daemon: Daemon, mode: str, index: int, key: Path, scratch: Path
) -> tuple[float, list[str]]:
    name = f"bench-{mode}-{index}"
    spec: dict[str, Any] = {"name": name, "image": "debian-12",
                            "ssh_keys": [key.with_suffix(".pub").read_text().strip()]}  # fmt: skip
    if MODES[mode]:
        spec["firmware"] = MODES[mode]
    start = time.monotonic()
    vm = client.launch(spec)
    port = next(f["host_port"] for f in vm["forwards"] if f["guest_port"] == 22)
    ready = ssh_ready(key, port, start + SSH_TIMEOUT)
    argv = Path(f"/proc/{vm['pid']}/cmdline").read_bytes().decode().split("\0")[:-1]
    shutil.copyfile(daemon.home / "lib" / "vms" / vm["id"] / "seed.iso", scratch / "seed.iso")
    client.delete(name, force=True)
    return ready - start, argv


def plain_argv(argv: list[str], vm_dir: str, runtime: str, scratch: Path, port: int) -> list[str]:
    """hangar's argv with the plain side's own paths and SSH port, started at once (no -S)."""
    out = []
    for token in argv:
        if token == "-S":
            continue
        token = token.replace(vm_dir, str(scratch)).replace(runtime, str(scratch / "run"))
        if "hostfwd=tcp:127.0.0.1:" in token:
            head, _, tail = token.partition("hostfwd=tcp:127.0.0.1:")
            token = head + f"hostfwd=tcp:127.0.0.1:{port}" + tail[tail.index("-") :]
        out.append(token)
    return out


def plain_round(
    argv: list[str], image_disk: Path, key: Path, scratch: Path, ovmf_vars: str | None
) -> float:
    vm_dir = next(a.split("filename=")[1].split(",")[0] for a in argv if "root-file" in a
                  and "filename=" in a).rsplit("/", 1)[0]  # fmt: skip
    runtime = next(a for a in argv if a.startswith("unix:") and "qmp.sock" in a)
    runtime = runtime.removeprefix("unix:").rsplit("/", 1)[0]
    (scratch / "run").mkdir(exist_ok=True)
    port = free_port()
    command = plain_argv(argv, vm_dir, runtime, scratch, port)
    start = time.monotonic()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image_disk), str(scratch / "root.qcow2"), "2G"], check=True)  # fmt: skip
    if ovmf_vars and any("efivars.fd" in a for a in command):
        shutil.copyfile(ovmf_vars, scratch / "efivars.fd")
    qemu = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = ssh_ready(key, port, start + SSH_TIMEOUT)
    finally:
        qemu.send_signal(signal.SIGKILL)
        qemu.wait()
        for leftover in ("root.qcow2", "efivars.fd", "serial.log"):
            (scratch / leftover).unlink(missing_ok=True)
    return ready - start


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 2), "min_s": round(min(values), 2),
            "max_s": round(max(values), 2)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# debian-12: launch → SSH-ready, hangar vs plain QEMU (same flags)",
        "",
        f"{result['rounds']} round(s) per mode, interleaved; TCG on {result['cpus']} cores; "
        f"load average at start {result['load_at_start']}.",
        "",
        "| boot mode | hangar median (s) | plain median (s) | ratio | bar ≤ 1.1× |",
        "|---|---|---|---|---|",
    ]
    for mode, row in result["modes"].items():
        lines.append(
            f"| {mode} | {row['hangar']['median_s']} | {row['plain']['median_s']} | "
            f"{row['ratio']:.3f} | {'met' if row['bar_met'] else 'NOT met'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", default="direct,bios,uefi")
    parser.add_argument("--cache", default="/var/cache/hangar-test")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    os.environ["HANGAR_TEST_CACHE"] = args.cache
    modes = args.modes.split(",")
    home = Path(tempfile.mkdtemp(prefix="hgb-", dir="/tmp"))
    daemon = Daemon(home)
    daemon.start()
    result: dict[str, Any] = {
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_at_start": round(os.getloadavg()[0], 2),
        "modes": {},
    }
    try:
        key = home / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        with daemon.client() as client:
            client.build_image("debian-12")
            image = client.images()
            manifest = next(i for i in image if i["name"] == "debian-12")
            image_disk = home / "lib" / "images" / "debian-12" / manifest["disk"]
            ovmf_vars = client.host_info().get("ovmf_vars")
            for mode in modes:
                hangar, plain = [], []
                for index in range(args.rounds):
                    scratch = home / f"plain-{mode}-{index}"
                    scratch.mkdir()
                    seconds, qemu_argv = hangar_round(client, daemon, mode, index, key, scratch)
                    hangar.append(seconds)
                    plain.append(plain_round(qemu_argv, image_disk, key, scratch, ovmf_vars))
                    print(f"{mode} round {index}: hangar {hangar[-1]:.1f} s, plain "
                          f"{plain[-1]:.1f} s", flush=True)  # fmt: skip
                ratio = statistics.median(hangar) / statistics.median(plain)
                result["modes"][mode] = {
                    "hangar": summary(hangar), "plain": summary(plain),
                    "hangar_s": hangar, "plain_s": plain,
                    "ratio": round(ratio, 3), "bar": BAR, "bar_met": ratio <= BAR,
                }  # fmt: skip
    finally:
        daemon.stop()
        kill_vm_processes(home)
        shutil.rmtree(home, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "guests.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.output_dir / "guests.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
