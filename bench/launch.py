"""Launch latency: hangar against plain qemu-img + QEMU with the same flags, in the same run.

Two figures per side, interleaved round by round (hangar, plain, hangar, plain, ...):

* launch -> QEMU running: hangar's ``POST /1.0/vms`` returning (QEMU started
  paused, wired over QMP, continued) against ``qemu-img create`` + exec QEMU +
  QMP ``query-status`` answering ``running``;
* launch -> boot marker: until ``HANGAR-BOOT-COMPLETE`` is in the serial log.

The plain side runs the QEMU argv rendered by hangar's own
``render_argv`` (minus ``-S``), so the flags are identical. Results go to
``bench/results/launch.json`` and ``launch.md``; see ``bench/README.md``.

Run: ``.venv/bin/python -m bench.launch [--rounds N]`` (as root, like hangard).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httpx
from qemu.qmp import QMPClient

from hangar.client.client import ApiError, Client
from hangar.errors import DaemonUnavailable
from hangar.paths import Paths
from hangar.services.qemu.argv import VMFiles, render_argv
from hangar.services.storage.images import ImageManifest, ImageStore
from hangar.spec.host import HostFacts
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMConfig, VMCreate

FORMAT_VERSION = 1
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent
DEFAULT_CACHE = Path(os.environ.get("HANGAR_CACHE", "/var/cache/hangar-test"))
IMAGE = "tiny"
GUEST_PORT = 80
# Bars from the issue: hangar's median over the plain median.
BARS = {"running": 1.5, "boot_marker": 1.1}
# Both sides watch for "running" and for the marker with the same tight poll.
POLL = 0.002
MARKER_POLL = 0.005

log = logging.getLogger("bench.launch")


def now() -> float:
    """CLOCK_MONOTONIC seconds: system-wide, so comparable with the traced hangard's marks."""
    return time.monotonic()


# --- small helpers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_marker(
    path: Path,
    marker: str,
    deadline: float,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Tail ``path`` until ``marker`` appears; return the monotonic time it was seen.

    Raises :class:`TimeoutError` (with the log's tail) at ``deadline`` or when
    ``alive()`` turns false.
    """
    needle = marker.encode()
    tail = b""
    fh = None
    try:
        while True:
            if fh is None:
                with contextlib.suppress(FileNotFoundError):
                    fh = path.open("rb")
            if fh is not None:
                chunk = fh.read()
                if chunk:
                    seen = now()
                    tail = (tail + chunk)[-8192:]
                    if needle in tail:
                        return seen
            if now() > deadline or not alive():
                why = "QEMU exited" if not alive() else "timed out"
                text = tail.decode(errors="replace")[-2000:]
                raise TimeoutError(f"{marker!r} not in {path} ({why}); serial tail:\n{text}")
            time.sleep(MARKER_POLL)
    finally:
        if fh is not None:
            fh.close()


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "tracked_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# --- hangard -----------------------------------------------------------------------------


class Hangard:
    """A private hangard in its own HANGAR_HOME, started as a separate process."""

    def __init__(self, home: Path, cache: Path, *, trace: bool):
        self.home = home
        self.cache = cache
        self.trace = trace
        self.paths = Paths.from_env({"HANGAR_HOME": str(home), "HANGAR_CACHE": str(cache)})
        self.log = home / "hangard.log"
        self.trace_file = home / "trace.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self._trace_offset = 0

    @property
    def socket(self) -> Path:
        return self.paths.socket

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        env["HANGAR_HOME"] = str(self.home)
        env["HANGAR_CACHE"] = str(self.cache)
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        if self.trace:
            env["HANGAR_BENCH_TRACE"] = str(self.trace_file)
            # As a module: run as a script, bench/ would come first on sys.path and
            # bench/platform.py would shadow the standard library's platform.
            env["PYTHONPATH"] = str(BENCH_DIR.parent)
            argv = [sys.executable, "-m", "bench.traced_hangard"]
        else:
            env.pop("HANGAR_BENCH_TRACE", None)
            argv = [str(BIN / "hangard")]
        self.cache.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = now() + timeout
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hangard exited at start:\n{self.log_tail()}")
            try:
                with Client(self.socket) as client:
                    client.host_info()
                return
            except DaemonUnavailable:
                time.sleep(0.05)
        raise RuntimeError(f"hangard did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    def new_trace_events(self) -> list[dict[str, Any]]:
        """Trace marks written since the last call."""
        if not self.trace:
            return []
        try:
            with self.trace_file.open("rb") as fh:
                fh.seek(self._trace_offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._trace_offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]

    def vm_config(self, name: str) -> VMConfig:
        """The resolved config hangard stored for VM ``name`` (read-only look at its DB)."""
        uri = f"file:{self.paths.database}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute("SELECT config FROM vms WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RuntimeError(f"VM {name!r} is not in hangard's database")
        return VMConfig.model_validate_json(row[0])


def host_facts(info: dict[str, Any]) -> HostFacts:
    values = {f.name: info[f.name] for f in dataclasses.fields(HostFacts)}
    values["machine_types"] = tuple(values["machine_types"])
    return HostFacts(**values)


# --- the two sides -----------------------------------------------------------------------


def launch_spec(name: str, port: int) -> dict[str, Any]:
    """The request both sides are built from: the tiny image, port 80 forwarded."""
    return {
        "name": name,
        "image": IMAGE,
        "nics": [{"forwards": [{"host_port": port, "guest_port": GUEST_PORT}]}],
    }


def hangar_round(
    client: Client, name: str, marker: str, timeout: float, marker_via: str
) -> dict[str, Any]:
    """One launch through hangard. The caller deletes the VM."""
    spec = launch_spec(name, free_port())
    psi0 = cpu_pressure_us()
    t0 = now()
    view = client.launch(spec)
    t_running = now()
    psi_running = cpu_pressure_us()
    if view.get("state") != "running":
        raise RuntimeError(f"hangar launched {name} but it is {view.get('state')}: {view}")
    if marker_via == "api":
        t_marker = follow_marker_api(client, name, marker, t0 + timeout)
    else:
        t_marker = wait_for_marker(Path(view["serial_log"]), marker, t0 + timeout)
    psi_marker = cpu_pressure_us()
    return {
        "t0": t0,
        "t_running": t_running,
        "t_marker": t_marker,
        "running_s": t_running - t0,
        "boot_marker_s": t_marker - t0,
        "cpu_pressure": pressure(psi0, psi_running, psi_marker, t_running - t0, t_marker - t0),
        "pid": view.get("pid"),
    }


def cpu_pressure_us() -> int | None:
    """Total µs some task waited for a CPU (/proc/pressure/cpu), None without PSI."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def pressure(
    start: int | None, running: int | None, marker: int | None, t_run: float, t_marker: float
) -> dict[str, float] | None:
    """Share of each interval during which some task on the host waited for a CPU (noise)."""
    if start is None or running is None or marker is None:
        return None
    return {
        "until_running": (running - start) / 1e6 / t_run,
        "until_marker": (marker - start) / 1e6 / t_marker,
    }


def follow_marker_api(client: Client, name: str, marker: str, deadline: float) -> float:
    """Follow the serial log through hangard's API (50 ms server-side poll)."""
    seen = ""
    try:
        with client.follow_logs(name, lines=100000, idle_timeout=deadline - now()) as chunks:
            for chunk in chunks:
                seen = (seen + chunk)[-8192:]
                if marker in seen:
                    return now()
                if now() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    raise TimeoutError(f"{marker!r} not on {name}'s serial log; tail:\n{seen[-2000:]}")


@dataclasses.dataclass
class Baseline:
    """What the plain side needs: the image, the host facts, where to put its files."""

    manifest: ImageManifest
    image_dir: Path
    host: HostFacts
    root: Path
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    def config(self, name: str) -> VMConfig:
        """Resolve the same request hangar gets, as hangar does (hangar.spec.resolve)."""
        request = VMCreate.model_validate(launch_spec(name, free_port()))
        return resolve(
            request,
            self.manifest,
            self.host,
            vm_id=uuid.uuid4().hex,
            kernel_path=str(self.image_dir / (self.manifest.kernel or "")),
            initrd_path=(
                str(self.image_dir / self.manifest.initrd) if self.manifest.initrd else None
            ),
        )

    def argv(self, config: VMConfig, files: VMFiles) -> list[str]:
        """hangar's own QEMU argv for ``config``, without -S: a person just starts QEMU."""
        argv = render_argv(config, self.host, files)
        if argv.count("-S") != 1:
            raise RuntimeError(f"expected exactly one -S in hangar's argv: {argv}")
        argv.remove("-S")
        return argv

    def files(self, index: int) -> VMFiles:
        base = self.root / f"b{index}"
        return VMFiles(dir=base / "vm", runtime=base / "run")

    def run(
        self, loop: asyncio.AbstractEventLoop, index: int, name: str, marker: str, timeout: float
    ) -> dict[str, Any]:
        config = self.config(name)
        files = self.files(index)
        files.dir.mkdir(parents=True)
        files.runtime.mkdir(parents=True)
        argv = self.argv(config, files)
        image_disk = self.image_dir / self.manifest.disk

        psi0 = cpu_pressure_us()
        t0 = now()
        subprocess.run(
            [
                "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                "-b", str(image_disk), str(files.disk), str(config.disk_size),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )  # fmt: skip
        t_img = now()
        with files.qemu_log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        t_exec = now()
        try:
            t_socket, t_connected, t_running = loop.run_until_complete(
                qmp_until_running(files, proc, t0 + timeout)
            )
            psi_running = cpu_pressure_us()
            t_marker = wait_for_marker(
                files.serial_log, marker, t0 + timeout, alive=lambda: proc.poll() is None
            )
            psi_marker = cpu_pressure_us()
        finally:
            self.kill(proc)
            shutil.rmtree(files.dir.parent, ignore_errors=True)
        return {
            "t0": t0,
            "running_s": t_running - t0,
            "boot_marker_s": t_marker - t0,
            "cpu_pressure": pressure(psi0, psi_running, psi_marker, t_running - t0, t_marker - t0),
            "steps_s": {
                "qemu-img create": t_img - t0,
                "exec QEMU (Popen)": t_exec - t_img,
                "QMP socket appears (QEMU starting)": t_socket - t_exec,
                "QMP connect (greeting, capabilities)": t_connected - t_socket,
                "QMP query-status": t_running - t_connected,
            },
            "argv": argv,
        }

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is not None and proc in self.procs:
            self.procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.procs):
            self.kill(proc)


async def qmp_until_running(
    files: VMFiles, proc: subprocess.Popen[bytes], deadline: float
) -> tuple[float, float, float]:
    """Connect to QEMU's QMP socket as soon as it answers, then ask until it is running.

    Returns the times its socket appeared, QMP connected (greeting and
    capabilities negotiated) and ``query-status`` answered ``running``.
    """
    client = QMPClient("bench-plain")
    appeared: float | None = None
    try:
        while True:
            if files.qmp_socket.exists():
                if appeared is None:
                    appeared = now()
                try:
                    await client.connect(str(files.qmp_socket))
                    break
                except Exception:  # qemu.qmp raises ConnectError / OSError while QEMU starts
                    pass
            if proc.poll() is not None:
                raise RuntimeError(
                    f"plain QEMU exited with {proc.returncode}:\n"
                    + files.qemu_log.read_text(errors="replace")[-2000:]
                )
            if now() > deadline:
                raise TimeoutError("plain QEMU's QMP socket did not answer")
            await asyncio.sleep(POLL)
        connected = now()
        while True:
            reply = cast(dict[str, Any], await client.execute("query-status"))
            if reply["status"] == "running":
                return appeared or connected, connected, now()
            if now() > deadline:
                raise TimeoutError(f"plain QEMU is {reply['status']}, not running")
            await asyncio.sleep(POLL)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


# --- where hangar's time goes -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interval:
    name: str
    start: float
    end: float
    container: bool

    @property
    def duration(self) -> float:
        return self.end - self.start


def intervals(events: list[dict[str, Any]]) -> list[Interval]:
    """Pair B/E marks by name (calls of one name never nest in hangard's launch path)."""
    open_: dict[str, list[dict[str, Any]]] = {}
    out: list[Interval] = []
    for ev in sorted(events, key=lambda e: float(e["t"])):
        if ev["ev"] == "B":
            open_.setdefault(ev["name"], []).append(ev)
        elif ev["ev"] == "E" and open_.get(ev["name"]):
            begin = open_[ev["name"]].pop()
            out.append(
                Interval(ev["name"], begin["t"], ev["t"], bool(begin.get("container", False)))
            )
    return sorted(out, key=lambda i: i.start)


def breakdown(events: list[dict[str, Any]], t0: float, t_return: float) -> dict[str, Any]:
    """Cut one hangar launch (t0 .. client got the answer) into consecutive steps.

    Steps are the outermost traced calls below the request and the service
    containers; the time between two steps is reported as "(between ...)"
    so the segments add up to the whole launch.
    """
    inside = [e for e in events if t0 <= float(e.get("at", e["t"])) <= t_return]
    spans = intervals(inside)
    http = next((s for s in spans if s.name == "http POST /1.0/vms"), None)
    leaves_all = [s for s in spans if not s.container]
    leaves = [
        s
        for s in leaves_all
        if not any(
            o is not s and o.start <= s.start and s.end <= o.end and o.duration > s.duration
            for o in leaves_all
        )
    ]
    segments: list[tuple[str, float]] = []
    cursor = t0
    if http is not None:
        segments.append(("HTTP: client -> hangard (request sent, parsed)", http.start - t0))
        cursor = http.start
    previous = "request"
    for leaf in leaves:
        if leaf.start > cursor:
            segments.append((f"(between {previous} and {leaf.name})", leaf.start - cursor))
        segments.append((leaf.name, leaf.duration))
        cursor = max(cursor, leaf.end)
        previous = leaf.name
    if http is not None and http.end > cursor:
        segments.append((f"(between {previous} and response sent)", http.end - cursor))
        cursor = http.end
    segments.append(("HTTP: hangard -> client (response received, decoded)", t_return - cursor))

    merged: dict[str, float] = {}
    for name, seconds in segments:
        merged[name] = merged.get(name, 0.0) + seconds

    db_total = sum(s.duration for s in spans if s.name.startswith("db "))
    instants = [e for e in inside if e["ev"] == "I"]
    attempts = [e for e in instants if e["name"] == "qmp attempt"]
    created = [float(e["at"]) for e in instants if e["name"] == "qmp socket created"]
    spawn = next((s for s in spans if s.name == "spawn QEMU via sh"), None)
    connect = next((s for s in spans if s.name == "QMP connect (QEMU starting)"), None)
    extra: dict[str, float | int] = {
        "db_total_s": db_total,
        "qmp_connect_attempts": len(attempts),
    }
    if created and attempts:
        # QEMU had its socket listening this long before hangard first tried it.
        extra["qmp_poll_slack_s"] = max(0.0, float(attempts[0]["t"]) - created[0])
    if spawn is not None and created:
        extra["spawn_start_to_qmp_socket_s"] = created[0] - spawn.start
    if spawn is not None and attempts:
        extra["spawn_start_to_first_qmp_attempt_s"] = float(attempts[0]["t"]) - spawn.start
    if spawn is not None and connect is not None:
        extra["spawn_start_to_qmp_connected_s"] = connect.end - spawn.start
    if connect is not None and created:
        extra["qmp_socket_to_connected_s"] = connect.end - created[0]
    return {"segments_s": merged, "categories_s": hangar_categories(merged), "extra": extra}


# The launch cut into a few kinds of work, the same on both sides where the work is shared.
CATEGORIES = (
    "qemu-img create",
    "QEMU start: exec/spawn until QMP connected",
    "QMP query-status and cont",
    "SQLite (transactions, fsync)",
    "HTTP and FastAPI (client, request, response)",
    "other hangard Python (checks, resolve, view, gaps)",
)


def hangar_categories(segments: dict[str, float]) -> dict[str, float]:
    """Sum hangar's launch segments into :data:`CATEGORIES` (they add up to the launch)."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for name, seconds in segments.items():
        if name == "qemu-img create":
            key = CATEGORIES[0]
        elif name in ("spawn QEMU via sh", "QMP connect (QEMU starting)") or (
            name.startswith("(between spawn") and "QMP connect" in name
        ):
            key = CATEGORIES[1]
        elif name in ("QMP query-status", "QMP cont", "(between QMP query-status and QMP cont)"):
            key = CATEGORIES[2]
        elif name.startswith("db "):
            key = CATEGORIES[3]
        elif (
            name.startswith("HTTP")
            or name.startswith("(between request")
            or (name.endswith("and response sent)"))
        ):
            key = CATEGORIES[4]
        else:
            key = CATEGORIES[5]
        out[key] += seconds
    return out


def plain_categories(steps: dict[str, float]) -> dict[str, float]:
    out = dict.fromkeys(CATEGORIES, 0.0)
    for name, seconds in steps.items():
        if name == "qemu-img create":
            out[CATEGORIES[0]] += seconds
        elif name == "QMP query-status":
            out[CATEGORIES[2]] += seconds
        else:
            out[CATEGORIES[1]] += seconds
    return out


# --- the run -----------------------------------------------------------------------------


class Run:
    """Everything one benchmark run starts, so all of it can be stopped and removed."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
        self.hangard = Hangard(self.home, args.cache, trace=not args.no_trace)
        self.baseline: Baseline | None = None
        self.client: Client | None = None
        self.live_vms: set[str] = set()

    def cleanup(self) -> None:
        """Stop everything this run started and remove its files (Ctrl-C is ignored meanwhile)."""
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            if self.baseline is not None:
                self.baseline.kill_all()
            if self.client is not None:
                for name in list(self.live_vms):
                    with contextlib.suppress(Exception):
                        self.client.delete(name, force=True)
                self.client.close()
            self.hangard.stop()
            # hangard leaves VMs running when it stops; kill whatever still runs from our home.
            kill_processes_under(self.home)
            shutil.rmtree(self.home, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def execute(self) -> dict[str, Any]:
        args = self.args
        started = datetime.now(UTC)
        load_start = os.getloadavg()
        print(f"hangar home {self.home}; starting hangard", flush=True)
        self.hangard.start()
        self.client = Client(self.hangard.socket, timeout=120)
        info = self.client.host_info()
        host = host_facts(info)
        t = now()
        build = self.client.build_image(IMAGE)
        print(
            f"image {IMAGE}: {'built' if build['built'] else 'up to date'} in {now() - t:.1f} s",
            flush=True,
        )
        store = ImageStore(self.hangard.paths.images)
        manifest = store.get(IMAGE)
        marker = manifest.boot_marker
        self.baseline = Baseline(
            manifest=manifest, image_dir=store.path(IMAGE), host=host, root=self.home / "plain"
        )
        self.hangard.new_trace_events()  # drop start-up and build marks

        loop = asyncio.new_event_loop()
        rounds: list[dict[str, Any]] = []
        argv_check: dict[str, Any] = {}
        try:
            total = args.warmup + args.rounds
            for index in range(total):
                warmup = index < args.warmup
                label = "warm-up" if warmup else f"round {index - args.warmup + 1}/{args.rounds}"
                name = f"bench-{index}"

                self.live_vms.add(name)
                h = hangar_round(self.client, name, marker, args.timeout, args.marker_via)
                if not argv_check:
                    argv_check = self.check_argv(name, h.get("pid"))
                self.client.delete(name, force=True)
                self.live_vms.discard(name)
                events = self.hangard.new_trace_events()
                h["trace"] = (
                    breakdown(events, h["t0"], h["t_running"]) if self.hangard.trace else None
                )
                time.sleep(args.pause)

                b = self.baseline.run(loop, index, f"plain-{index}", marker, args.timeout)
                if "argv" not in argv_check.get("plain", {}):
                    argv_check["plain"] = {"argv": b["argv"]}
                    argv_check["differences"] = argv_differences(
                        argv_check.get("hangar_argv", []), b["argv"]
                    )
                del b["argv"]
                time.sleep(args.pause)

                rounds.append(
                    {
                        "round": index,
                        "warmup": warmup,
                        "other_qemu_processes": other_qemus(self.home),
                        "loadavg_1min": os.getloadavg()[0],
                        "hangar": h,
                        "plain": b,
                    }
                )
                print(
                    f"{label:>12}: hangar running {h['running_s'] * 1000:7.1f} ms, "
                    f"marker {h['boot_marker_s']:6.3f} s | plain running "
                    f"{b['running_s'] * 1000:7.1f} ms, marker {b['boot_marker_s']:6.3f} s",
                    flush=True,
                )
        finally:
            loop.close()

        return summarize(
            args=args,
            started=started,
            info=info,
            load=(load_start, os.getloadavg()),
            rounds=rounds,
            argv_check=argv_check,
            image_built=bool(build["built"]),
            marker=marker,
        )

    def check_argv(self, name: str, pid: int | None) -> dict[str, Any]:
        """Is hangar's running QEMU exactly render_argv(its stored config)? (It should be.)"""
        config = self.hangard.vm_config(name)
        files = VMFiles(
            dir=self.hangard.paths.vm_dir(config.id),
            runtime=self.hangard.paths.vm_runtime(config.id),
        )
        assert self.baseline is not None
        actual: list[str] | None = None
        if pid is not None:
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                actual = [a.decode() for a in raw.split(b"\0")[:-1]]
        # hangard hands QEMU its QMP socket as a descriptor; its number is hangard's.
        qmp = [a for a in actual or [] if a.startswith("socket,id=qmp,fd=")]
        qmp_fd = int(qmp[0].split("fd=")[1].split(",")[0]) if qmp else None
        rendered = render_argv(config, self.baseline.host, files, qmp_fd=qmp_fd)
        if actual and len(actual) > 2 and actual[1] == "-sandbox":
            # The sandbox adds QEMU's own seccomp filter (services/qemu/jail.py), not argv's.
            actual = [actual[0], *actual[3:]]
        return {
            "hangar_argv": rendered,
            "hangar_qemu_cmdline_matches_render_argv": actual == rendered,
        }


def argv_differences(hangar: list[str], plain: list[str]) -> list[list[str]]:
    """Token pairs where the plain argv differs from hangar's (after dropping -S)."""
    h = [a for a in hangar if a != "-S"]
    if len(h) != len(plain):
        return [["<length>", f"{len(h)} vs {len(plain)}"]]
    return [[a, b] for a, b in zip(h, plain, strict=True) if a != b]


def kill_processes_under(home: Path) -> None:
    """SIGKILL every process whose command line names ``home`` (QEMUs and their sh), by pid."""
    needle = str(home).encode()
    me = os.getpid()
    victims: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            victims.append(int(entry.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = now() + 10
    while victims and now() < deadline:
        victims = [p for p in victims if _alive(p)]
        time.sleep(0.05)


def other_qemus(home: Path) -> int:
    """QEMU processes on the host that this run did not start (noise from other users)."""
    needle = str(home).encode()
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.split(b"\0", 1)[0].rsplit(b"/", 1)[-1].startswith(b"qemu-system"):
            count += needle not in cmdline
    return count


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# --- results -----------------------------------------------------------------------------


def summarize(
    *,
    args: argparse.Namespace,
    started: datetime,
    info: dict[str, Any],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    rounds: list[dict[str, Any]],
    argv_check: dict[str, Any],
    image_built: bool,
    marker: str,
) -> dict[str, Any]:
    measured = [r for r in rounds if not r["warmup"]]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for side in ("hangar", "plain"):
        summary[side] = {
            metric: stats([r[side][f"{metric}_s"] for r in measured])
            for metric in ("running", "boot_marker")
        }
    for side in ("hangar", "plain"):
        for key in ("until_running", "until_marker"):
            shares = [r[side]["cpu_pressure"][key] for r in measured if r[side].get("cpu_pressure")]
            if shares:
                summary[side][f"cpu_pressure_{key}"] = stats(shares)
    ratios = {
        metric: summary["hangar"][metric]["median"] / summary["plain"][metric]["median"]
        for metric in ("running", "boot_marker")
    }
    bars = {
        metric: {"max_ratio": bar, "ratio": ratios[metric], "met": ratios[metric] <= bar}
        for metric, bar in BARS.items()
    }

    hangar_steps: dict[str, list[float]] = {}
    extras: dict[str, list[float]] = {}
    for r in measured:
        trace = r["hangar"].get("trace") or {}
        for name, seconds in trace.get("segments_s", {}).items():
            hangar_steps.setdefault(name, []).append(seconds)
        for name, value in trace.get("extra", {}).items():
            extras.setdefault(name, []).append(float(value))
    plain_steps: dict[str, list[float]] = {}
    for r in measured:
        for name, seconds in r["plain"]["steps_s"].items():
            plain_steps.setdefault(name, []).append(seconds)
    categories: dict[str, dict[str, dict[str, float]]] = {}
    for side in ("hangar", "plain"):
        per_round = [
            (r["hangar"].get("trace") or {}).get("categories_s")
            if side == "hangar"
            else plain_categories(r["plain"]["steps_s"])
            for r in measured
        ]
        if all(per_round):
            categories[side] = {
                key: stats([float(c[key]) for c in per_round if c]) for key in CATEGORIES
            }

    return {
        "format_version": FORMAT_VERSION,
        "benchmark": "launch",
        "timestamp": started.isoformat(timespec="seconds"),
        "host": {
            "qemu_binary": info.get("qemu_binary"),
            "qemu_version": info.get("qemu_version"),
            "accelerator": info.get("accelerator"),
            "accelerator_reason": info.get("accelerator_reason"),
            "cpus": info.get("cpus"),
            "memory_bytes": info.get("memory_bytes"),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "hangar_version": info.get("hangar_version"),
            "git": git_info(),
            "loadavg_start": list(load[0]),
            "loadavg_end": list(load[1]),
        },
        "settings": {
            "command": " ".join(["python -m bench.launch", *sys.argv[1:]]),
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "order": "interleaved: hangar then plain in every round",
            "pause_between_launches_s": args.pause,
            "image": IMAGE,
            "image_built_in_this_run": image_built,
            "boot_marker": marker,
            "marker_observed_via": (
                "hangard's log API (follow_logs)"
                if args.marker_via == "api"
                else f"tailing the serial log file every {MARKER_POLL * 1000:g} ms (both sides)"
            ),
            "hangard": "traced (bench/traced_hangard.py)" if not args.no_trace else "stock",
        },
        "rounds": rounds,
        "summary": summary,
        "ratios": ratios,
        "bars": bars,
        "hangar_breakdown_s": {name: stats(values) for name, values in hangar_steps.items()},
        "hangar_breakdown_extra": {name: stats(values) for name, values in extras.items()},
        "plain_steps_s": {name: stats(values) for name, values in plain_steps.items()},
        "categories_s": categories,
        "argv": argv_check,
    }


def fmt_s(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} s ({s['min']:.3f}–{s['max']:.3f})"


def fmt_ms(s: dict[str, float]) -> str:
    return f"{s['median'] * 1000:.1f} ({s['min'] * 1000:.1f}–{s['max'] * 1000:.1f})"


def markdown(result: dict[str, Any]) -> str:
    host = result["host"]
    settings = result["settings"]
    summary = result["summary"]
    lines = [
        "# Launch latency: hangar vs plain qemu-img + QEMU (same flags, same run)",
        "",
        f"{result['timestamp']} · QEMU {host['qemu_version']} · {host['accelerator']} · "
        f"{host['cpus']} CPUs · {settings['rounds']} interleaved rounds "
        f"(+{settings['warmup_rounds']} warm-up) · median (min–max) · "
        f"`{settings.get('command', 'python -m bench.launch')}`",
        "",
        "| measure | hangar | plain QEMU | ratio | bar | met |",
        "|---|---|---|---|---|---|",
    ]
    titles = {"running": "launch → QEMU running", "boot_marker": "launch → boot marker"}
    for metric, title in titles.items():
        bar = result["bars"][metric]
        lines.append(
            f"| {title} | {fmt_s(summary['hangar'][metric])} | "
            f"{fmt_s(summary['plain'][metric])} | {bar['ratio']:.2f}× | "
            f"≤ {bar['max_ratio']}× | {'yes' if bar['met'] else '**no**'} |"
        )
    psi = [summary[side].get("cpu_pressure_until_marker") for side in ("hangar", "plain")]
    if psi[0] and psi[1]:
        lines += [
            "",
            "Host CPU pressure (share of time some task waited for a CPU, /proc/pressure/cpu) "
            f"from launch to marker, median: hangar {psi[0]['median']:.0%}, "
            f"plain {psi[1]['median']:.0%}.",
        ]
    categories = result.get("categories_s", {})
    if "hangar" in categories and "plain" in categories:
        lines += [
            "",
            "## launch → running by kind of work (ms, median per kind; medians do not add up)",
            "",
            "| work | hangar | plain | hangar − plain |",
            "|---|---|---|---|",
        ]
        for key in CATEGORIES:
            h, p = categories["hangar"][key], categories["plain"][key]
            plain_text = fmt_ms(p) if p["max"] > 0 else "—"
            lines.append(
                f"| {key} | {fmt_ms(h)} | {plain_text} | "
                f"{(h['median'] - p['median']) * 1000:+.1f} |"
            )
    steps = result["hangar_breakdown_s"]
    if steps:
        total = summary["hangar"]["running"]["median"]
        lines += [
            "",
            "## hangar launch → running, step by step (traced hangard; ms)",
            "",
            "| step | median (min–max) | share of median launch |",
            "|---|---|---|",
        ]
        small = 0.0
        for name, s in steps.items():
            if s["median"] < 0.001:
                small += s["median"]
                continue
            lines.append(f"| {name} | {fmt_ms(s)} | {s['median'] / total:.0%} |")
        lines.append(f"| everything under 1 ms each | {small * 1000:.1f} | {small / total:.0%} |")
        extra = result["hangar_breakdown_extra"]
        notes = []
        if "db_total_s" in extra:
            notes.append(f"SQLite calls in total: {fmt_ms(extra['db_total_s'])} ms")
        if "qmp_connect_attempts" in extra:
            notes.append(f"QMP connect attempts: {extra['qmp_connect_attempts']['median']:g}")
        if "qmp_poll_slack_s" in extra:
            notes.append(
                "QMP socket listening before hangard's first try: "
                f"{fmt_ms(extra['qmp_poll_slack_s'])} ms"
            )
        if "qmp_socket_to_connected_s" in extra:
            plain_connect = result["plain_steps_s"].get("QMP connect (greeting, capabilities)")
            notes.append(
                "QMP socket created → connected: hangar "
                f"{fmt_ms(extra['qmp_socket_to_connected_s'])} ms"
                + (f", plain {fmt_ms(plain_connect)} ms" if plain_connect else "")
            )
        if "spawn_start_to_qmp_connected_s" in extra:
            notes.append(
                "spawn start → QMP connected (hangar's QEMU start-up): "
                f"{fmt_ms(extra['spawn_start_to_qmp_connected_s'])} ms"
            )
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    plain = result["plain_steps_s"]
    lines += [
        "",
        "## plain side, step by step (ms)",
        "",
        "| step | median (min–max) |",
        "|---|---|",
    ]
    lines += [f"| {name} | {fmt_ms(s)} |" for name, s in plain.items()]
    argv = result.get("argv", {})
    if argv:
        lines += [
            "",
            "hangar's running QEMU command line equals `render_argv` of its stored config: "
            f"{argv.get('hangar_qemu_cmdline_matches_render_argv')}. The plain QEMU runs that "
            "argv without `-S`, differing only in names, ids, paths, MAC and host port.",
        ]
    return "\n".join(lines) + "\n"


# --- entry point ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.launch",
        description="Launch latency of hangar against plain qemu-img + QEMU, in one run.",
    )
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per side (10)")
    parser.add_argument("--warmup", type=int, default=1, help="unreported warm-up rounds (1)")
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds of quiet after each launch (0.5)"
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="per launch, seconds (90)")
    parser.add_argument(
        "--marker-via",
        choices=["file", "api"],
        default="file",
        help="watch hangar's serial log as a file (like the plain side; default) "
        "or through hangard's log API",
    )
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="run the stock hangard instead of the traced one (no step breakdown)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="HANGAR_CACHE")
    parser.add_argument(
        "--output-dir", type=Path, default=BENCH_DIR / "results", help="bench/results"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    return args


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so cleanup runs."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    if os.geteuid() != 0:
        print("bench.launch: run as root (hangard needs root)", file=sys.stderr)
        return 2
    run = Run(args)
    with interruptible():
        try:
            result = run.execute()
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        except (ApiError, RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            print(f"bench.launch failed: {exc}", file=sys.stderr)
            tail = run.hangard.log_tail()
            if tail:
                print(f"--- hangard log tail ---\n{tail}", file=sys.stderr)
            return 1
        finally:
            run.cleanup()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    write_atomically(args.output_dir / "launch.json", json.dumps(result, indent=2) + "\n")
    write_atomically(args.output_dir / "launch.md", table)
    print()
    print(table)
    print(f"results: {args.output_dir / 'launch.json'}, {args.output_dir / 'launch.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
