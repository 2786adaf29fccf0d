"""What the fake QMP server (fake_qmp.py) emulates beyond the run state: device
unplug, block jobs and outgoing migration, with the events QEMU 7.2 sends for them.

Reference: QEMU's QAPI schema (qapi/qdev.json DEVICE_DELETED, qapi/job.json
JobStatus and JOB_STATUS_CHANGE, qapi/migration.json MigrationStatus and
MIGRATION) and hw/core/qdev.c, job.c, migration/migration.c of 7.2:

* ``device_del`` only asks the guest: a PCIe (native hotplug) device goes when the
  guest acks, and QEMU then sends DEVICE_DELETED, first for a virtio device's
  backend child (a ``path``, no ``device``), then for the device (``device`` and
  ``path``). A guest that never acks leaves the device in place, with no event.
* A block job (``blockdev-backup``) goes created -> running before the command
  returns, then running -> waiting -> pending -> concluded when it succeeds or
  running -> aborting -> concluded when it fails or is cancelled; with
  ``auto-dismiss`` false it stays ``concluded`` in ``query-jobs`` (with ``error``
  if it failed) until ``job-dismiss`` (-> null).
* A migration goes setup -> active -> completed (or failed, or cancelling ->
  cancelled); MIGRATION events are sent only with the ``events`` capability on.
  The completed source VM is in run state ``postmigrate``. A QEMU started with
  ``-incoming defer`` (run state ``inmigrate``) loads with ``migrate-incoming``:
  active -> completed, its run state (paused under -S) set before the event; a
  failed load ends the process (QEMU 7.2 exits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


class QMPCommandError(Exception):
    """Raised by a handler to answer ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


Emit = Callable[[str, dict[str, Any] | None], None]
Spawn = Callable[[Coroutine[Any, Any, None]], None]

# QEMU 7.2's MigrationCapability values.
MIGRATION_CAPABILITIES = frozenset(
    {
        "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
        "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
        "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
        "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
        "zero-copy-send", "postcopy-preempt",
    }
)  # fmt: skip
# QEMU 7.2's MigrateSetParameters members.
MIGRATION_PARAMETERS = frozenset(
    {
        "announce-initial", "announce-max", "announce-rounds", "announce-step",
        "compress-level", "compress-threads", "compress-wait-thread", "decompress-threads",
        "throttle-trigger-threshold", "cpu-throttle-initial", "cpu-throttle-increment",
        "cpu-throttle-tailslow", "tls-creds", "tls-hostname", "tls-authz", "max-bandwidth",
        "downtime-limit", "x-checkpoint-delay", "block-incremental", "multifd-channels",
        "xbzrle-cache-size", "max-postcopy-bandwidth", "max-cpu-throttle",
        "multifd-compression", "multifd-zlib-level", "multifd-zstd-level",
        "block-bitmap-mapping",
    }
)  # fmt: skip


class Devices:
    """Devices by id (from -device or device_add) and their unplug.

    ``unplug_delay``: seconds the guest takes to ack a ``device_del``; None: it
    never does (the device stays, no event).
    """

    def __init__(self, emit: Emit, spawn: Spawn) -> None:
        self._emit = emit
        self._spawn = spawn
        #: Device id -> driver.
        self.devices: dict[str, str] = {}
        self.unplug_delay: float | None = 0.0

    def add(self, args: dict[str, Any]) -> Any:
        ident = args.get("id")
        if ident is not None:
            if ident in self.devices:
                raise QMPCommandError("GenericError", f"Duplicate device ID '{ident}'")
            self.devices[str(ident)] = str(args["driver"])
        return {}

    def delete(self, args: dict[str, Any]) -> Any:
        ident = str(args["id"])
        if ident not in self.devices:
            raise QMPCommandError("DeviceNotFound", f"Device '{ident}' not found")
        delay = self.unplug_delay
        if delay is not None:
            self._spawn(self._guest_acks(ident, delay))
        return {}

    async def _guest_acks(self, ident: str, delay: float) -> None:
        await asyncio.sleep(delay)
        driver = self.devices.pop(ident, None)
        if driver is None:
            return
        path = f"/machine/peripheral/{ident}"
        if driver.startswith("virtio-"):
            self._emit("DEVICE_DELETED", {"path": f"{path}/virtio-backend"})
        self._emit("DEVICE_DELETED", {"device": ident, "path": path})


@dataclass
class Job:
    id: str
    type: str
    status: str
    auto_dismiss: bool
    total: int
    current: int = 0
    error: str | None = None

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "current-progress": self.current,
            "status": self.status,
            "total-progress": self.total,
            "type": self.type,
            "id": self.id,
        }
        if self.error is not None:
            info["error"] = self.error
        return info


class Jobs:
    """Block jobs (``blockdev-backup``), ``query-jobs``, ``job-cancel``, ``job-dismiss``.

    A job runs until ``finish_job`` when ``hold_jobs`` is set, else it ends at once;
    ``fail_next_job(error)`` makes the next job fail with QEMU's error text.
    """

    def __init__(self, emit: Emit, spawn: Spawn) -> None:
        self._emit = emit
        self._spawn = spawn
        self.jobs: dict[str, Job] = {}
        self.hold_jobs = False
        #: Bytes a job copies (its total-progress); it reports half done while running.
        self.job_size = 1 << 20
        self._next_error: list[str] = []
        self._release: dict[str, asyncio.Event] = {}

    def fail_next_job(self, error: str) -> None:
        self._next_error.append(error)

    def finish_job(self, ident: str) -> None:
        self._release[ident].set()

    def backup(self, args: dict[str, Any]) -> Any:
        ident = str(args.get("job-id", args["device"]))
        if ident in self.jobs:
            raise QMPCommandError("GenericError", f"Job ID '{ident}' already in use")
        if args.get("auto-finalize", True) is not True:
            raise QMPCommandError("GenericError", "fake: only auto-finalize jobs")
        if args["sync"] not in ("top", "full", "none", "incremental", "bitmap"):
            raise QMPCommandError(
                "GenericError", f"Parameter 'sync' does not accept value '{args['sync']}'"
            )
        job = Job(ident, "backup", "created", bool(args.get("auto-dismiss", True)), self.job_size)
        self.jobs[ident] = job
        self._set(job, "created")
        self._set(job, "running")
        job.current = job.total // 2
        error = self._next_error.pop(0) if self._next_error else None
        self._release[ident] = release = asyncio.Event()
        if not self.hold_jobs:
            release.set()
        self._spawn(self._run(job, release, error))
        return {}

    async def _run(self, job: Job, release: asyncio.Event, error: str | None) -> None:
        await release.wait()
        if job.status != "running":
            return  # cancelled meanwhile
        if error is None:
            job.current = job.total
            for status in ("waiting", "pending", "concluded"):
                self._set(job, status)
        else:
            job.error = error
            self._set(job, "aborting")
            self._set(job, "concluded")
        if job.auto_dismiss:
            self._dismiss(job)

    def query(self, args: dict[str, Any]) -> Any:
        return [job.info() for job in self.jobs.values()]

    def cancel(self, args: dict[str, Any]) -> Any:
        job = self._find(args)
        if job.status not in ("running", "paused", "ready", "standby"):
            raise self._verb(job, "cancel")
        job.error = "Operation canceled"
        self._set(job, "aborting")
        self._set(job, "concluded")
        self._release[job.id].set()
        if job.auto_dismiss:
            self._dismiss(job)
        return {}

    def dismiss(self, args: dict[str, Any]) -> Any:
        job = self._find(args)
        if job.status != "concluded":
            raise self._verb(job, "dismiss")
        self._dismiss(job)
        return {}

    def _dismiss(self, job: Job) -> None:
        self._set(job, "null")
        del self.jobs[job.id]

    def _find(self, args: dict[str, Any]) -> Job:
        job = self.jobs.get(str(args["id"]))
        if job is None:
            raise QMPCommandError("DeviceNotActive", "Job not found")
        return job

    def _verb(self, job: Job, verb: str) -> QMPCommandError:
        return QMPCommandError(
            "GenericError",
            f"Job '{job.id}' in state '{job.status}' cannot accept command verb '{verb}'",
        )

    def _set(self, job: Job, status: str) -> None:
        job.status = status
        self._emit("JOB_STATUS_CHANGE", {"id": job.id, "status": status})


class Migration:
    """Outgoing migration to a descriptor passed with ``getfd`` (``migrate fd:NAME``).

    It runs until ``finish_migration`` when ``hold_migration`` is set, else it ends
    at once; ``fail_next_migration(desc)`` makes the next one fail with that text.
    ``completed`` is called when one completes (the VM turns ``postmigrate``).
    """

    def __init__(
        self,
        emit: Emit,
        spawn: Spawn,
        completed: Callable[[], None],
        loaded: Callable[[bool], None] | None = None,
    ) -> None:
        self._emit = emit
        self._spawn = spawn
        self._completed = completed
        #: For a QEMU started with -incoming defer: called with whether it loaded.
        self.loaded = loaded
        self._incoming_started = False
        self.status = "none"
        self.capabilities: set[str] = set()
        self.parameters: dict[str, Any] = {}
        #: Names given with getfd and not yet used.
        self.fds: set[str] = set()
        self.hold_migration = False
        #: (total, remaining) RAM bytes while it runs.
        self.ram = (1 << 30, 1 << 29)
        self._error: str | None = None
        self._next_error: list[str] = []
        self._release = asyncio.Event()

    def fail_next_migration(self, desc: str) -> None:
        self._next_error.append(desc)

    def finish_migration(self) -> None:
        self._release.set()

    def getfd(self, args: dict[str, Any]) -> Any:
        self.fds.add(str(args["fdname"]))
        return {}

    def set_capabilities(self, args: dict[str, Any]) -> Any:
        if self.status in ("setup", "active", "cancelling"):
            raise QMPCommandError("GenericError", "There's a migration process in progress")
        for cap in args["capabilities"]:
            name = cap.get("capability")
            if name not in MIGRATION_CAPABILITIES:
                raise QMPCommandError(
                    "GenericError", f"Parameter 'capability' does not accept value '{name}'"
                )
            if cap.get("state"):
                self.capabilities.add(name)
            else:
                self.capabilities.discard(name)
        return {}

    def set_parameters(self, args: dict[str, Any]) -> Any:
        for name in args:
            if name not in MIGRATION_PARAMETERS:
                raise QMPCommandError("GenericError", f"Parameter '{name}' is unexpected")
        self.parameters.update(args)
        return {}

    def migrate(self, args: dict[str, Any]) -> Any:
        if self.status in ("setup", "active", "cancelling"):
            raise QMPCommandError("GenericError", "There's a migration process in progress")
        uri = str(args["uri"])
        if not uri.startswith("fd:"):
            raise QMPCommandError("GenericError", "fake: only fd: migration")
        name = uri.removeprefix("fd:")
        if name not in self.fds:
            raise QMPCommandError(
                "GenericError", f"File descriptor named '{name}' has not been found"
            )
        self.fds.discard(name)  # QEMU takes the descriptor over
        self._error = self._next_error.pop(0) if self._next_error else None
        self._release = asyncio.Event()
        if not self.hold_migration:
            self._release.set()
        self._set("setup")
        self._spawn(self._run())
        return {}

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the migration thread starts after the reply
        if self.status != "setup":
            return
        self._set("active")
        await self._release.wait()
        if self.status != "active":
            return
        if self._error is None:
            self._set("completed")
            self._completed()
        else:
            self._set("failed")

    def incoming(self, args: dict[str, Any]) -> Any:
        if self.loaded is None:
            raise QMPCommandError(
                "GenericError", "'-incoming' was not specified on the command line"
            )
        if self._incoming_started:
            raise QMPCommandError("GenericError", "The incoming migration has already been started")
        uri = str(args["uri"])
        name = uri.removeprefix("fd:")
        if not uri.startswith("fd:") or name not in self.fds:
            raise QMPCommandError(
                "GenericError", f"File descriptor named '{name}' has not been found"
            )
        self.fds.discard(name)
        self._incoming_started = True
        self._error = self._next_error.pop(0) if self._next_error else None
        self._release = asyncio.Event()
        if not self.hold_migration:
            self._release.set()
        self._spawn(self._load())
        return {}

    async def _load(self) -> None:
        await asyncio.sleep(0)  # the load runs in a coroutine after the reply
        self._set("active")  # the destination has no 'setup'
        await self._release.wait()
        assert self.loaded is not None
        if self._error is None:
            self.loaded(True)  # the run state first, then the event
            self._set("completed")
        else:
            self._set("failed")
            self.loaded(False)

    def cancel(self, args: dict[str, Any]) -> Any:
        if self.status in ("setup", "active"):
            self._set("cancelling")
            self._set("cancelled")
            self._release.set()
        return {}

    def query(self, args: dict[str, Any]) -> Any:
        if self.status == "none":
            return {}  # no migration ever ran
        info: dict[str, Any] = {"status": self.status}
        total, remaining = self.ram
        if self.status == "active":
            info["ram"] = {"total": total, "remaining": remaining, "transferred": total - remaining}
        elif self.status == "completed":
            info["ram"] = {"total": total, "remaining": 0, "transferred": total}
        elif self.status == "failed" and self._error is not None:
            info["error-desc"] = self._error
        return info

    def _set(self, status: str) -> None:
        self.status = status
        if "events" in self.capabilities:
            self._emit("MIGRATION", {"status": status})
