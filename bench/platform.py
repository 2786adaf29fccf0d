"""Platform benchmarks: list latency with 1,000 VMs, 50 concurrent launches, event latency.

* **list**: 1,000 VM rows inserted straight into the database (not booted), then
  ``GET /1.0/vms`` timed over the unix socket and over HTTPS with a token.
  Bar: p50 < 50 ms; p99 reported.
* **launches**: 50 launches of the tiny image at 128M, all at once (one thread
  each, over the unix socket). Bar: 0 errors; total time and launches/s reported.
  The VMs are deleted afterwards.
* **events**: a websocket subscriber over HTTPS; a VM paused and resumed N times;
  latency = arrival at the client - the event's server timestamp (same host, same
  clock, ms resolution). Bar: p99 < 100 ms.

Run as root: ``.venv/bin/python -m bench.platform [--launches 50] [--vms 1000]``.
Writes ``bench/results/platform.json`` and ``platform.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hangar.certs import fingerprint
from hangar.client.client import Client
from hangar.client.remotes import Remote, fetch_certificate
from hangar.paths import Paths
from hangar.services.lifecycle import PowerState
from hangar.services.storage.images import ImageStore
from hangar.spec.host import HostFacts
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMCreate
from hangar.state.db import Database
from hangar.state.projects import ProjectRepository
from hangar.state.vms import VMRepository

# ruff: noqa: E501  (report lines)

BENCH_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DEFAULT_CACHE = Path(os.environ.get("HANGAR_CACHE", "/var/cache/hangar-test"))
BARS = {"list_p50_ms": 50.0, "launch_errors": 0, "event_p99_ms": 100.0}
MiB = 1024**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stats_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(pct(50), 2),
        "p90_ms": round(pct(90), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


class Hangard:
    """A private hangard (HANGAR_HOME in /tmp), HTTPS on a free loopback port."""

    def __init__(self, home: Path, cache: Path):
        self.home = home
        self.cache = cache
        self.port = free_port()
        self.paths = Paths(state=home / "lib", runtime=home / "run", cache_dir=cache)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, HANGAR_HOME=str(self.home), HANGAR_CACHE=str(self.cache))
        with (self.home / "hangard.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "hangard"), "--listen", f"127.0.0.1:{self.port}"],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.home / "hangard.log").read_text()[-2000:])
            try:
                with self.client() as c:
                    c.host_info()
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("hangard did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def client(self, **kwargs: Any) -> Client:
        return Client(self.paths.socket, **kwargs)

    def remote(self, token: str) -> Remote:
        pem = fetch_certificate(self.url)
        return Remote("bench", self.url, token, pem, fingerprint(pem))


def host_facts(info: dict[str, Any]) -> HostFacts:
    """HostFacts back from ``GET /1.0/host`` (lists become tuples again)."""
    facts: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in info.items()}
    facts.pop("hangar_version", None)
    return HostFacts(**facts)


def insert_rows(hangard: Hangard, host: HostFacts, count: int, project: str) -> None:
    """``count`` stopped VMs in ``project``, written straight into the database."""
    store = ImageStore(hangard.paths.images)
    image = store.get("tiny")
    db = Database(hangard.paths.database)
    if ProjectRepository(db).find(project) is None:
        ProjectRepository(db).insert(project, "benchmark rows")
    repo = VMRepository(db)
    for i in range(count):
        vm_id = uuid.uuid4().hex
        config = resolve(
            VMCreate(name=f"row-{i:04d}", image="tiny"),
            image,
            host,
            vm_id=vm_id,
            kernel_path=str(store.path("tiny") / image.kernel),
            initrd_path=str(store.path("tiny") / image.initrd) if image.initrd else None,
        )
        repo.insert(config, PowerState.STOPPED, project)
    db.close()


def bench_list(hangard: Hangard, token: str, project: str, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with hangard.client(project=project) as local, Client(remote=hangard.remote(token)) as remote:
        for name, client in (("unix socket", local), ("https + token", remote)):
            count = len(client.vms())  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                client.vms()
                times.append(time.perf_counter() - t0)
            results[name] = {"vms": count, **stats_ms(times)}
    return results


def bench_launches(hangard: Hangard, count: int) -> dict[str, Any]:
    def launch(i: int) -> float:
        with hangard.client(timeout=600) as c:
            t0 = time.perf_counter()
            c.launch({"name": f"burst-{i:02d}", "image": "tiny", "memory": 128 * MiB})
            return time.perf_counter() - t0

    errors: list[str] = []
    latencies: list[float] = []
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(launch, i) for i in range(count)]:
            try:
                latencies.append(future.result())
            except Exception as exc:
                errors.append(repr(exc))
    total = time.perf_counter() - t0
    with hangard.client() as c:
        running = sum(
            1 for vm in c.vms() if vm["name"].startswith("burst-") and vm["state"] == "running"
        )

    def delete(i: int) -> None:
        with hangard.client(timeout=600) as c:
            c.delete(f"burst-{i:02d}", force=True)

    t1 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        delete_errors = [f for f in [pool.submit(delete, i) for i in range(count)] if f.exception()]
    return {
        "launches": count,
        "errors": len(errors),
        "error_samples": errors[:5],
        "running_after": running,
        "total_s": round(total, 2),
        "launches_per_s": round(count / total, 2),
        "per_launch": stats_ms(latencies) if latencies else {},
        "delete_total_s": round(time.perf_counter() - t1, 2),
        "delete_errors": len(delete_errors),
    }


def bench_events(hangard: Hangard, token: str, cycles: int) -> dict[str, Any]:
    with hangard.client() as local:
        local.launch({"name": "evented", "image": "tiny", "memory": 128 * MiB})
    latencies: list[float] = []
    try:
        with Client(remote=hangard.remote(token)) as remote, remote.events("lifecycle") as events:
            assert next(events)["type"] == "subscribed"
            with hangard.client() as local:
                for _ in range(cycles):
                    for action in (local.pause, local.resume):
                        action("evented")
                        while True:
                            event = next(events)
                            arrived = time.time()
                            if event["data"]["vm"] == "evented":
                                sent = datetime.fromisoformat(event["at"]).timestamp()
                                latencies.append(max(0.0, arrived - sent))
                                break
    finally:
        with hangard.client() as local:
            local.delete("evented", force=True)
    return {"events": len(latencies), "transport": "wss + token", **stats_ms(latencies)}


def markdown(result: dict[str, Any]) -> str:
    lst, burst, ev = result["list"], result["launches"], result["events"]
    lines = [
        f"# Platform benchmark ({result['when']}, {result['host']['cpus']} CPUs, {result['host']['accelerator']})",
        "",
        "| figure | value | bar | ok |",
        "|---|---|---|---|",
    ]
    for transport, figures in lst.items():
        lines.append(
            f"| list {figures['vms']} VMs, {transport}: p50 / p99 | {figures['p50_ms']} ms / {figures['p99_ms']} ms"
            f" | p50 < {BARS['list_p50_ms']:g} ms | {'yes' if figures['p50_ms'] < BARS['list_p50_ms'] else 'NO'} |"
        )
    if burst is not None:
        lines += _launch_rows(burst)
    if ev is not None:
        lines += _event_rows(ev)
    return "\n".join(lines) + "\n"


def _launch_rows(burst: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append(
        f"| {burst['launches']} concurrent launches: errors | {burst['errors']} | 0 | {'yes' if burst['errors'] == 0 else 'NO'} |"
    )
    lines.append(
        f"| … total time / launches per s | {burst['total_s']} s / {burst['launches_per_s']} | - | - |"
    )
    return lines


def _event_rows(ev: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append(
        f"| event latency ({ev['events']} events, {ev['transport']}): p50 / p99 / max | "
        f"{ev['p50_ms']} / {ev['p99_ms']} / {ev['max_ms']} ms | p99 < {BARS['event_p99_ms']:g} ms | "
        f"{'yes' if ev['p99_ms'] < BARS['event_p99_ms'] else 'NO'} |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=1000, help="rows for the list benchmark")
    parser.add_argument("--list-rounds", type=int, default=200)
    parser.add_argument("--launches", type=int, default=50)
    parser.add_argument("--event-cycles", type=int, default=50, help="pause+resume pairs")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    # 0 skips that part: e.g. --launches 0 --event-cycles 0 for the list figures alone.
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (hangard needs root)")
    home = Path(tempfile.mkdtemp(prefix="hgb-", dir="/tmp"))
    args.cache.mkdir(parents=True, exist_ok=True)
    hangard = Hangard(home, args.cache)
    try:
        hangard.start()
        with hangard.client() as c:
            c.build_image("tiny")
            host = c.host_info()
        hangard.stop()
        insert_rows(hangard, host_facts(host), args.vms, "rows")
        hangard.start()
        with hangard.client() as c:
            token = c.create_token("viewer", "bench-rows", project="rows")["secret"]
            default_token = c.create_token("viewer", "bench-events")["secret"]
        print(f"list: {args.vms} rows in the database", flush=True)
        lst = bench_list(hangard, token, "rows", args.list_rounds)
        print(json.dumps(lst, indent=1), flush=True)
        burst: dict[str, Any] | None = None
        if args.launches > 0:
            print(f"launches: {args.launches} at once", flush=True)
            burst = bench_launches(hangard, args.launches)
            print(json.dumps(burst, indent=1), flush=True)
        ev: dict[str, Any] | None = None
        if args.event_cycles > 0:
            print("events", flush=True)
            ev = bench_events(hangard, default_token, args.event_cycles)
            print(json.dumps(ev, indent=1), flush=True)
    finally:
        hangard.stop()
        for pidfile in (home / "run" / "vm").glob("*/qemu.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, FileNotFoundError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "format_version": 1,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": host["cpus"],
            "accelerator": host["accelerator"],
            "qemu": host["qemu_version"],
        },
        "bars": BARS,
        "list": lst,
        "launches": burst,
        "events": ev,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "platform.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.output_dir / "platform.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
