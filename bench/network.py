"""Network benchmark: launch -> DHCP lease on a nat network, forward setup, 20 VMs on one network.

Three figures, every one inside network namespaces this script creates and removes:

1. **launch -> DHCP lease**, hangar against a hand-made baseline, interleaved round
   by round. hangar: ``POST /1.0/vms`` with one NIC on a nat network, until the
   VM's MAC is in the network's dnsmasq lease file. Baseline (by hand, in its own
   namespace): a bridge, a tap on it and a dnsmasq with one DHCP reservation made
   once; per round ``qemu-img create`` of the overlay, exec QEMU (the argv
   hangar's ``render_argv`` renders for the same request, minus ``-S``) until the
   MAC is in that dnsmasq's lease file. Both sides poll their lease file every 5 ms.
   Bar from the issue: hangar median / baseline median <= 1.1.
2. **time to add a port forward** (``POST /1.0/networks/N/forwards``: state row,
   ruleset re-rendered and applied with ``nft -f``), with 1 and with 20 VMs on
   the network.
3. **20 VMs on one network**: launch 20 (128 MiB each) one after another, time
   until every one holds its lease; then every guest's address is distinct.

Run as root: ``.venv/bin/python -m bench.network [--rounds N]``. Writes
``bench/results/network.json`` and ``network.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hangar.client.client import Client  # noqa: E402
from hangar.paths import Paths  # noqa: E402
from hangar.services.qemu.argv import VMFiles, render_argv  # noqa: E402
from hangar.services.storage.images import ImageStore  # noqa: E402
from hangar.spec.host import HostFacts  # noqa: E402
from hangar.spec.resolve import resolve  # noqa: E402
from hangar.spec.vm import VMCreate  # noqa: E402
from tests.support.daemon import Daemon, kill_vm_processes  # noqa: E402
from tests.support.netns import in_ns, ip, remove  # noqa: E402

BAR = 1.1
POLL = 0.005
MEMORY = "128M"
PLAIN_MAC = "52:54:00:99:00:02"


def lease_seen(path: Path, mac: str) -> bool:
    try:
        return mac in path.read_text().lower()
    except FileNotFoundError:
        return False


def wait_lease(path: Path, mac: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not lease_seen(path, mac):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no lease for {mac} in {path} after {timeout} s")
        time.sleep(POLL)


class Plain:
    """The hand-made baseline: bridge, tap and dnsmasq by hand, then plain QEMU."""

    def __init__(self, ns: str, work: Path, daemon_home: Path, host: HostFacts):
        self.ns = ns
        self.work = work
        self.host = host
        self.leases = work / "leases"
        paths = Paths(state=daemon_home / "lib", runtime=daemon_home / "run")
        store = ImageStore(paths.images)
        self.image = store.get("tiny")
        self.image_dir = store.path("tiny")
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        remove(self.ns)
        ip("netns", "add", self.ns)
        for cmd in (
            ["link", "add", "br0", "type", "bridge"],
            ["addr", "add", "10.99.0.1/24", "dev", "br0"],
            ["link", "set", "br0", "up"],
            ["tuntap", "add", "dev", "tap0", "mode", "tap"],
            ["link", "set", "tap0", "master", "br0", "up"],
        ):
            ip("-n", self.ns, *cmd)
        conf = self.work / "dnsmasq.conf"
        conf.write_text(
            "interface=br0\nbind-interfaces\nexcept-interface=lo\n"
            f"pid-file={self.work / 'dnsmasq.pid'}\ndhcp-leasefile={self.leases}\n"
            "dhcp-range=10.99.0.0,static,255.255.255.0,1h\n"
            f"dhcp-host={PLAIN_MAC},10.99.0.2,plain\nuser=root\ngroup=root\n"
        )
        result = in_ns(self.ns, ["dnsmasq", f"--conf-file={conf}"])
        assert result.returncode == 0, result

    def round(self, n: int) -> float:
        vm_id = f"{n:02d}" + "ab" * 15
        request = VMCreate.model_validate(
            {
                "name": f"plain{n}",
                "image": "tiny",
                "memory": MEMORY,
                "nics": [{"type": "network", "network": "plain", "mac": PLAIN_MAC}],
            }
        )
        config = resolve(
            request,
            self.image,
            self.host,
            vm_id=vm_id,
            kernel_path=str(self.image_dir / self.image.kernel),
            initrd_path=str(self.image_dir / self.image.initrd) if self.image.initrd else None,
        )
        nics = tuple(n.model_copy(update={"tap": "tap0"}) for n in config.nics)
        config = config.model_copy(update={"nics": nics})
        files = VMFiles(dir=self.work / f"vm{n}", runtime=self.work / f"r{n}")
        files.dir.mkdir()
        files.runtime.mkdir()
        argv = [a for a in render_argv(config, self.host, files) if a != "-S"]
        # A fresh lease each round: forget the last one (dnsmasq keeps it in memory
        # too, but the file is rewritten on every new lease).
        self.leases.write_text("")
        subprocess.run(["pkill", "-HUP", "-F", str(self.work / "dnsmasq.pid")], check=False)
        t0 = time.monotonic()
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(self.image_dir / self.image.disk),
                str(files.disk),
                str(config.disk_size),
            ],
            check=True,
        )
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_lease(self.leases, PLAIN_MAC)
        elapsed = time.monotonic() - t0
        self.proc.kill()
        self.proc.wait()
        return elapsed

    def teardown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        remove(self.ns)


def leases_file(daemon: Daemon, client: Client, network: str) -> Path:
    net_id = client.network(network)["config"]["id"]
    return daemon.home / "lib" / "networks" / net_id / "dnsmasq.leases"


def hangar_round(daemon: Daemon, client: Client, n: int) -> float:
    name = f"vm{n}"
    leases = leases_file(daemon, client, "benchnet")
    t0 = time.monotonic()
    vm = client.launch(
        {
            "name": name,
            "image": "tiny",
            "memory": MEMORY,
            "nics": [{"type": "network", "network": "benchnet"}],
        }
    )
    wait_lease(leases, vm["macs"][0])
    elapsed = time.monotonic() - t0
    client.delete(name, force=True)
    return elapsed


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def forward_times(client: Client, vm: str, count: int, base_port: int) -> list[float]:
    times = []
    for i in range(count):
        spec = {"host_port": base_port + i, "vm": vm, "vm_port": 80}
        t0 = time.monotonic()
        fwd = client.add_forward("benchnet", spec)
        times.append(time.monotonic() - t0)
        client.delete_forward(fwd["id"])
    return times


def many_vms(daemon: Daemon, client: Client, count: int) -> dict[str, Any]:
    leases = leases_file(daemon, client, "benchnet")
    t0 = time.monotonic()
    macs = []
    for i in range(count):
        vm = client.launch(
            {
                "name": f"m{i}",
                "image": "tiny",
                "memory": MEMORY,
                "nics": [{"type": "network", "network": "benchnet"}],
            }
        )
        macs.append(vm["macs"][0])
    launched = time.monotonic() - t0
    for mac in macs:
        wait_lease(leases, mac, timeout=600)
    all_leased = time.monotonic() - t0
    addresses = [client.vm(f"m{i}")["addresses"][0] for i in range(count)]
    distinct = len({a["ip"] for a in addresses if a["leased"]})
    fwd = forward_times(client, "m0", 5, 20000)
    delete = timed(lambda: [client.delete(f"m{i}", force=True) for i in range(count)])
    return {
        "vms": count,
        "launch_calls_s": round(launched, 3),
        "all_leased_s": round(all_leased, 3),
        "distinct_leased_addresses": distinct,
        "forward_add_median_s_with_20_vms": round(statistics.median(fwd), 4),
        "delete_all_s": round(delete, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--output-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hgbench-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="hgbench-plain-", dir="/tmp"))
    ns_hangar, ns_plain = f"hgbench{os.getpid()}-h", f"hgbench{os.getpid()}-p"
    remove(ns_hangar)
    ip("netns", "add", ns_hangar)
    daemon = Daemon(home, netns=ns_hangar)
    plain: Plain | None = None
    try:
        daemon.start()
        with daemon.client() as client:
            client.build_image("tiny")
            facts = client.host_info()
            facts.pop("hangar_version", None)
            host = HostFacts(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()}
            )
            client.create_network({"name": "benchnet", "type": "nat", "subnet": "10.98.0.0/24"})
            plain = Plain(ns_plain, work, home, host)
            plain.setup()
            # Warm-up round each (page cache, first dnsmasq lease), not reported.
            hangar_round(daemon, client, 0)
            plain.round(0)
            hangar_times, plain_times = [], []
            for n in range(1, args.rounds + 1):
                hangar_times.append(hangar_round(daemon, client, n))
                plain_times.append(plain.round(n))
                print(f"round {n}: hangar {hangar_times[-1]:.3f} s, plain {plain_times[-1]:.3f} s")
            client.launch(
                {
                    "name": "fwd",
                    "image": "tiny",
                    "memory": MEMORY,
                    "nics": [{"type": "network", "network": "benchnet"}],
                }
            )
            fwd_times = forward_times(client, "fwd", 20, 10000)
            client.delete("fwd", force=True)
            many = many_vms(daemon, client, args.vms)
            client.delete_network("benchnet")
    finally:
        if plain is not None:
            plain.teardown()
        daemon.stop()
        kill_vm_processes(home)
        remove(ns_hangar)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    h, p = statistics.median(hangar_times), statistics.median(plain_times)
    result = {
        "format_version": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "machine": platform.node(),
            "cpus": os.cpu_count(),
            "accelerator": host.accelerator,
        },
        "rounds": args.rounds,
        "lease": {
            "hangar_s": [round(t, 3) for t in hangar_times],
            "plain_s": [round(t, 3) for t in plain_times],
            "hangar_median_s": round(h, 3),
            "plain_median_s": round(p, 3),
            "ratio": round(h / p, 3),
            "bar": BAR,
            "meets_bar": h / p <= BAR,
        },
        "forward_add": {
            "median_s": round(statistics.median(fwd_times), 4),
            "max_s": round(max(fwd_times), 4),
            "count": len(fwd_times),
        },
        "many_vms": many,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "network.json").write_text(json.dumps(result, indent=2) + "\n")
    md = "\n".join(
        [
            f"# Network benchmark ({result['date']}, {host.accelerator}, {os.cpu_count()} CPUs)",
            "",
            "| figure | hangar | plain (by hand) | ratio |",
            "|---|---|---|---|",
            f"| launch → DHCP lease, median of {args.rounds} | {h:.3f} s | {p:.3f} s | "
            f"{h / p:.2f}× (bar ≤ {BAR}×) |",
            f"| add a port forward, median of {len(fwd_times)} (1 VM) | "
            f"{result['forward_add']['median_s'] * 1000:.1f} ms | – | – |",
            f"| add a port forward, {args.vms} VMs on the network | "
            f"{many['forward_add_median_s_with_20_vms'] * 1000:.1f} ms | – | – |",
            f"| {args.vms} VMs: launch calls / all leased / deleted | "
            f"{many['launch_calls_s']:.1f} s / {many['all_leased_s']:.1f} s / "
            f"{many['delete_all_s']:.1f} s | – | – |",
            "",
        ]
    )
    (args.output_dir / "network.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
