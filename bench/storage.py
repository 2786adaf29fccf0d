"""Storage benchmarks: template launch at 1 GiB and 50 GiB, full copy, deploying 20 VMs.

    .venv/bin/python -m bench.storage [--rounds 10] [--deploy 20]

Run as root. Each figure is measured against its plain baseline in the same run:

* **template launch -> disk ready**: ``POST /1.0/vms`` with ``start=false`` from a
  template (linked clone + row) at 1 GiB and 50 GiB virtual size, against a plain
  ``qemu-img create -b template -F qcow2``. Bar: <= 50 ms, the same at both sizes.
* **full copy**: ``hangar copy --full`` of a stopped VM whose disk holds 256 MiB of
  data, against a plain ``qemu-img convert -f qcow2 -O qcow2`` of the same disk.
  Bar: <= 1.1x.
* **deploying 20**: launching 20 VMs from a template (API returns, then every boot
  marker), against 20 plain ``qemu-img create -b`` overlays for the disk part.

Writes ``bench/results/storage.json`` and ``storage.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.launch import Hangard, git_info, kill_processes_under
from hangar.client.client import Client

BENCH_DIR = Path(__file__).parent
G = 1024**3
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024


def median_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms)}


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def template_of_size(client: Client, size: int, name: str) -> None:
    vm = f"{name}-src"
    client.launch({"name": vm, "image": "tiny", "disk": size, "memory": MEMORY}, start=False)
    client.publish(vm, name)
    client.delete(vm)


def bench_template_launch(
    client: Client, images: Path, scratch: Path, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in (("1G", G), ("50G", 50 * G)):
        name = f"tmpl-{label.lower()}"
        template_of_size(client, size, name)
        disk = images / name / "disk.qcow2"
        hangar, plain = [], []
        for i in range(rounds + 1):
            t, _ = timed(client.launch, {"name": f"{name}-{i}", "image": name}, start=False)
            overlay = scratch / f"{name}-{i}.qcow2"
            p, _ = timed(
                subprocess.run,
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
                 str(overlay), str(size)],
                check=True,
            )  # fmt: skip
            if i:  # the first round is a warm-up
                hangar.append(t)
                plain.append(p)
            client.delete(f"{name}-{i}")
            overlay.unlink()
        out[label] = {"hangar_ms": median_ms(hangar), "plain_ms": median_ms(plain)}
    return out


def bench_full_copy(client: Client, home: Path, scratch: Path, rounds: int) -> dict[str, Any]:
    vm = client.launch({"name": "copy-src", "image": "tiny", "memory": MEMORY}, start=False)
    disk = home / "lib" / "vms" / vm["id"] / "root.qcow2"
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 256M", str(disk)],
        check=True,
        capture_output=True,
    )
    hangar, plain = [], []
    for i in range(rounds + 1):
        t, _ = timed(client.copy, "copy-src", f"copy-{i}", full=True)
        target = scratch / f"plain-{i}.qcow2"
        p, _ = timed(
            subprocess.run,
            ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(disk), str(target)],
            check=True,
        )
        if i:
            hangar.append(t)
            plain.append(p)
        client.delete(f"copy-{i}")
        target.unlink()
    client.delete("copy-src")
    h, b = median_ms(hangar), median_ms(plain)
    return {"hangar_ms": h, "plain_ms": b, "ratio": h["median"] / b["median"]}


def bench_deploy(client: Client, images: Path, scratch: Path, count: int) -> dict[str, Any]:
    names = [f"fleet-{i}" for i in range(1, count + 1)]
    # Created only (linked clones + rows): hangar's own share, no guests competing for CPU.
    t_created = time.perf_counter()
    for name in names:
        client.launch({"name": name, "image": "tmpl-1g", "memory": MEMORY}, start=False)
    created = time.perf_counter() - t_created
    for name in names:
        client.delete(name)
    t0 = time.perf_counter()
    for name in names:
        client.launch({"name": name, "image": "tmpl-1g", "memory": MEMORY})
    launched = time.perf_counter() - t0
    for name in names:
        client.wait_for_boot(name, MARKER, timeout=600)
    booted = time.perf_counter() - t0
    for name in names:
        client.delete(name, force=True)
    disk = images / "tmpl-1g" / "disk.qcow2"
    t1 = time.perf_counter()
    for i in range(count):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
             str(scratch / f"fleet-{i}.qcow2"), str(G)],
            check=True,
        )  # fmt: skip
    plain_disks = time.perf_counter() - t1
    return {
        "count": count,
        "all_created_s": created,
        "all_running_s": launched,
        "all_booted_s": booted,
        "per_vm_running_ms": launched / count * 1000,
        "plain_overlays_s": plain_disks,
    }


def markdown(result: dict[str, Any]) -> str:
    tl = result["template_launch"]
    fc = result["full_copy"]
    dp = result.get("deploy")
    lines = [
        f"# Storage benchmarks ({result['timestamp']}, {result['git'].get('commit', '')[:10]})",
        "",
        "| figure | hangar (median) | plain (median) | bar |",
        "|---|---|---|---|",
    ]
    for label in ("1G", "50G"):
        h, p = tl[label]["hangar_ms"], tl[label]["plain_ms"]
        lines.append(
            f"| template launch → disk ready, {label} | {h['median']:.1f} ms "
            f"({h['min']:.1f}–{h['max']:.1f}) | {p['median']:.1f} ms | ≤ 50 ms: "
            f"{'met' if h['median'] <= 50 else 'NOT met'} |"
        )
    lines.append(
        f"| full copy (256 MiB data) | {fc['hangar_ms']['median']:.0f} ms | "
        f"{fc['plain_ms']['median']:.0f} ms | ≤ 1.1×: {fc['ratio']:.2f}× "
        f"{'met' if fc['ratio'] <= 1.1 else 'NOT met'} |"
    )
    if dp is None:
        return "\n".join(lines) + "\n"
    lines.append(
        f"| deploy {dp['count']} from a template, created (not started) | "
        f"{dp['all_created_s']:.2f} s | {dp['count']} overlays {dp['plain_overlays_s']:.2f} s | "
        f"{dp['all_created_s'] / dp['plain_overlays_s']:.2f}× |"
    )
    lines.append(
        f"| deploy {dp['count']} from a template, started | "
        f"all running {dp['all_running_s']:.2f} s "
        f"({dp['per_vm_running_ms']:.0f} ms/VM), all booted {dp['all_booted_s']:.1f} s | "
        f"{dp['count']} overlays {dp['plain_overlays_s']:.2f} s | - |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--deploy", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/hangar-test"))
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="hgs-", dir="/tmp"))
    scratch = home / "scratch"
    scratch.mkdir()
    hangard = Hangard(home, args.cache, trace=False)
    hangard.start()
    try:
        with Client(hangard.socket, timeout=3600) as client:
            client.build_image("tiny")
            images = home / "lib" / "images"
            result: dict[str, Any] = {
                "format_version": 1,
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "git": git_info(),
                "host": {k: client.host_info()[k] for k in ("accelerator", "qemu_version", "cpus")},
                "settings": {"rounds": args.rounds, "deploy": args.deploy},
            }
            result["template_launch"] = bench_template_launch(client, images, scratch, args.rounds)
            result["full_copy"] = bench_full_copy(client, home, scratch, args.rounds)
            if args.deploy > 0:  # --deploy 0: the quick figures alone
                result["deploy"] = bench_deploy(client, images, scratch, args.deploy)
    finally:
        hangard.stop()
        kill_processes_under(home)
        shutil.rmtree(home, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "storage.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.output_dir / "storage.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
